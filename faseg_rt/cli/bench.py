"""`faseg-rt bench latency|throughput|batching|workers|ablations|profile|vocab|precision|ops|gpu`
and the scripts in benchmarks/.

Results go to `--out` (default `faseg-bench/` in the current folder, git-ignored, so a run never
edits the checked-in figures; `--out benchmarks/results` when the point is to update them).  The
table goes to stdout once; progress and the path written to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from faseg_rt import rules
from faseg_rt.bench.contention import SESSIONS
from faseg_rt.cli.args import add_threads_arg, positive_int_arg, threads_arg
from faseg_rt.cli.parser import CLIParser

#: where results go unless --out says otherwise (listed in .gitignore)
DEFAULT_OUT = "faseg-bench"


def add_common(p, in_process: bool = True):
    """The options every benchmark takes; in_process: also --device, --dtype, --engines and
    --threads, for those that run the model in this process (not `workers`, whose label runs
    choose their own)."""
    p.add_argument("--model", default="tiny",
                   help="'tiny' or 'full' (random SD 1.5-shaped model built offline, 'full' at SD 1.5 "
                        "widths) or an SD 1.x directory / hub id (default: tiny)")
    if in_process:
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
        p.add_argument("--dtype", default=None, choices=rules.DTYPE_CHOICES,
                       help="default: fp16 on CUDA, else fp32")
        p.add_argument("--engines", default=None, help="directory written by faseg-rt export (exported backends)")
        add_threads_arg(p)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "faseg_rt_bench_models"),
                   help="where the random tiny / full models are built once (default: %(default)s)")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="folder for the result JSON (default: %(default)s/; benchmarks/results to "
                        "update the checked-in figures)")
    p.add_argument("--tag", default=None, help="suffix of the result file name (default: MODEL-DEVICE)")
    add_cpus_arg(p)


def add_cpus_arg(p) -> None:
    """--cpus N: pin the benchmark to N CPUs, a stand-in for a container's CPU quota."""
    p.add_argument("--cpus", type=positive_int_arg, default=None, metavar="N",
                   help="pin this benchmark (every thread, and what it starts) to the first N CPUs it "
                        "may use, before torch starts its threads: a simulated N-CPU quota; the "
                        "thread policy then sees N CPUs (default: no pinning)")


def count_arg(text: str) -> int:
    """argparse type for a count that may be 0 (--background)."""
    return 0 if text.strip() == "0" else positive_int_arg(text)


def threads_list_arg(text: str) -> list[int]:
    """argparse type: '1' or '1,2' -> [1, 2], each checked as --threads is."""
    return [threads_arg(x) for x in text.split(",")]


def _add_latency(sub) -> None:
    lat = sub.add_parser("latency", help="per-stage latency at batch 1 vs reference and floor")
    add_common(lat)
    lat.add_argument("--backends", default="torch", help="comma-separated: torch,onnxruntime,tensorrt")
    lat.add_argument("--classes", default="sky,ball,box,person,tree", help="comma-separated class names")
    lat.add_argument("--caption", default="coloured shapes on a plain background", help="the caption")
    lat.add_argument("--warmup", type=int, default=1, help="untimed calls first (default: 1)")
    lat.add_argument("--iters", type=positive_int_arg, default=5, help="timed calls (default: 5)")
    lat.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                     help="also time the literal reference implementation (slow)")
    lat.add_argument("--ref-iters", type=positive_int_arg, default=1, help="timed reference calls (default: 1)")
    lat.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                     help="also measure HARD+TTF's extra memory at K = 20 and 150 classes")
    lat.add_argument("--frontend", default="none", choices=["none", "tiny", "real"],
                     help="also caption and recognise (caption/candidates 'auto') with random BLIP + "
                          "SigLIP: 'real' = BLIP-large + SigLIP-base sizes, 'tiny' = the test models")
    lat.add_argument("--frontend-batch-sizes", default="1,4",
                     help="batch sizes of the front-end batching table")
    lat.add_argument("--background", type=count_arg, default=0, metavar="N",
                     help="time every path idle and then beside N busy neighbour processes (pure "
                          "CPU, stopped at the end), side by side: idle ms, loaded ms, ratio "
                          "(default: 0, the per-stage table)")
    lat.add_argument("--neighbour-sessions", choices=SESSIONS, default=SESSIONS[0],
                     help="'shared': the neighbours are this run's children in its session (the "
                          "cores are shared per thread); 'own': each in a session of its own, as "
                          "other programs are (shared per session where the kernel's autogroup is "
                          "on). Default: shared")
    lat.add_argument("--also-threads", type=threads_list_arg, default=None, metavar="N[,M]",
                     help="also time the torch backend with these torch thread counts (e.g. 1: does "
                          "1 thread beat 2 under load?); implies the idle / loaded table")


def _add_workers(sub) -> None:
    wrk = sub.add_parser("workers", help="faseg-rt label as W workers x T threads: images/s per setting")
    add_common(wrk, in_process=False)
    wrk.add_argument("--settings", default="2x1,1x2",
                     help="WORKERSxTHREADS settings, comma-separated, each a label run with its own "
                          "local Ray (default: %(default)s)")
    wrk.add_argument("--images", type=positive_int_arg, default=16, help="images per run (default: 16)")
    wrk.add_argument("--latent", type=int, default=64, choices=[8, 16, 32, 64],
                     help="latent grid: 64 is the real 512 px method, 8 a 64 px smoke run (default: 64)")
    wrk.add_argument("--rounds", type=positive_int_arg, default=1,
                     help="times every setting runs, interleaved (default: 1)")
    wrk.add_argument("--timeout-s", type=float, default=900.0, help="per label run (default: 900)")


def _add_batching(sub) -> None:
    bat = sub.add_parser("batching", help="batch-invariant vs shared batching: images/s and "
                                          "disagreement with single calls")
    add_common(bat)
    bat.add_argument("--latents", default="8,16", help="latent grids: 8 (64 px), 16 (128 px), 64 (512 px)")
    bat.add_argument("--images", type=positive_int_arg, default=8, help="images per way (default: 8)")
    bat.add_argument("--batch-size", type=positive_int_arg, default=4, help="shared batch size (default: 4)")
    bat.add_argument("--repeats", type=positive_int_arg, default=2, help="timed rounds, fastest kept")


def add_benchmarks(sub) -> None:
    """The benchmarks as subparsers of `sub` (also the hidden per-batch-size worker of throughput)."""
    _add_latency(sub)
    thr = sub.add_parser("throughput", help="images/s and peak memory over batch sizes")
    add_common(thr)
    thr.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
                     help="default: torch")
    thr.add_argument("--batch-sizes", default="1,2,4", help="comma-separated, each in a fresh process")
    thr.add_argument("--images", type=positive_int_arg, default=8, help="images per batch size (default: 8)")
    _add_workers(sub)
    _add_batching(sub)
    abl = sub.add_parser("ablations", help="each optimisation against the plain way, same tensors")
    add_common(abl)
    abl.add_argument("--classes", type=positive_int_arg, default=5, help="number of classes (default: 5)")
    abl.add_argument("--repeats", type=positive_int_arg, default=3, help="timed repeats, fastest kept")
    prof = sub.add_parser("profile", help="torch.profiler: top operators of one warm call")
    add_common(prof)
    prof.add_argument("--classes", default="sky,ball,box,person,tree", help="comma-separated class names")
    prof.add_argument("--top", type=positive_int_arg, default=15, help="operators listed (default: 15)")
    voc = sub.add_parser("vocab", help="time by stage and extra memory for K = 1 .. 1000 classes")
    add_common(voc)
    voc.add_argument("--ks", default=None, help="class counts, e.g. 1,20,150 (default: 1 to 1000)")
    voc.add_argument("--repeats", type=positive_int_arg, default=1, help="calls per K (the fastest is kept)")
    voc.add_argument("--scores-max", type=int, default=150,
                     help="also measure the call with return_scores=True for K up to this")
    pre = sub.add_parser("precision", help="fp32 vs --dtype (bf16): masks, time, stage errors vs float64")
    add_common(pre)
    pre.add_argument("--cases", type=int, default=2, help="parity photographs to run (1 or 2)")
    pre.add_argument("--oracle", action=argparse.BooleanOptionalAction, default=True,
                     help="stage errors against the float64 oracle (tiny widths: minutes at full width)")
    pre.add_argument("--frontend", action=argparse.BooleanOptionalAction, default=False,
                     help="also the tiny captioner's and recognisers' captions / candidate lists in bf16 and "
                          "fp16 against fp32 (the policy's front-end rows)")
    ops = sub.add_parser("ops", help="bf16 vs fp32 per operator at SD 1.5 shapes, and the call's ceiling")
    ops.add_argument("--repeats", type=positive_int_arg, default=3, help="timed repeats, fastest kept")
    ops.add_argument("--profile", type=Path, default=None,
                     help="fp32 `bench profile --model full` JSON: print the call's bf16 ceiling")
    ops.add_argument("--out", default="faseg-bench", help="folder for the result JSON (default: faseg-bench/)")
    ops.add_argument("--tag", default="cpu", help="suffix of the result file name (default: cpu)")
    add_threads_arg(ops)
    add_cpus_arg(ops)
    sub.add_parser("gpu", help="every GPU measurement in steps (faseg-rt bench gpu -h)",
                   add_help=False, prefix_chars="\0").add_argument(
        "rest", nargs=argparse.REMAINDER, help="options of faseg-rt bench gpu")
    one = sub.add_parser("_throughput_one", description="one batch size of `throughput` (internal)")
    add_common(one)  # no help=: not listed
    one.add_argument("--backend", default="torch")
    one.add_argument("--batch", type=int, required=True)
    one.add_argument("--images", type=int, required=True)


DESCRIPTION = ("Benchmarks on random SD 1.5-shaped models (or a real one): each writes OUT/KIND-TAG.json "
               "and prints its table; `faseg-rt bench KIND -h` lists its options.")


def build_parser():
    p = CLIParser(prog="faseg-rt bench", description=DESCRIPTION)
    add_benchmarks(p.add_subparsers(dest="what", required=True, metavar="KIND"))
    return p


def cmd_bench(args) -> int:
    from faseg_rt.threads import apply

    if getattr(args, "cpus", None):  # before the policy reads the affinity and torch starts threads
        from faseg_rt.bench.contention import pin_cpus

        try:
            args.pinned = pin_cpus(args.cpus)
        except (OSError, ValueError) as e:
            print(f"faseg-rt bench: --cpus {args.cpus}: {e}", file=sys.stderr)
            return 2
    apply(getattr(args, "num_threads", None))  # every benchmark (and each throughput child) by the policy
    if args.what == "gpu":  # its own steps and options (faseg_rt/bench/gpu.py)
        from faseg_rt.bench.gpu import main as gpu_main

        return gpu_main(args.rest)
    if args.what == "_throughput_one":
        from faseg_rt.bench.throughput import _throughput_one

        _throughput_one(args)
        return 0
    from faseg_rt.io import atomic_write_json

    from faseg_rt.bench.common import long_vocabularies_expected, machine_info, with_provenance

    run_fn, table_fn = _benchmark(args.what)
    load_before = os.getloadavg()
    with long_vocabularies_expected():
        res = run_fn(args)
    # where the figures come from (CPU, ISA, threads, load before and after), in the JSON and the table
    device = res.get("device") or getattr(args, "device", None) or "cpu"
    res["machine"] = {**res.get("machine", {}), **machine_info(device, load_before=load_before)}
    if getattr(args, "pinned", None):
        res["machine"]["pinned"] = args.pinned
    table = with_provenance(table_fn(res), res["machine"])
    res["markdown"] = table
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    model = args.model if getattr(args, "model", None) in ("tiny", "full") else "model"  # ops has none
    tag = args.tag or f"{model}-{res.get('device') or getattr(args, 'device', None) or 'auto'}"
    path = Path(args.out) / f"{args.what}-{tag}.json".replace(":", "")
    atomic_write_json(path, res)
    print(table)
    print(f"\nwrote {path}")
    return 0


# Each benchmark run through cmd_bench: a loader returning its (run, table) functions.  The
# imports sit inside the loaders so that `faseg-rt bench -h` needs no torch.
def _latency():
    from faseg_rt.bench.latency import latency, latency_table
    return latency, latency_table


def _throughput():
    from faseg_rt.bench.throughput import throughput, throughput_table
    return throughput, throughput_table


def _workers():
    from faseg_rt.bench.workers import workers, workers_table
    return workers, workers_table


def _batching():
    from faseg_rt.bench.batching import batching, batching_table
    return batching, batching_table


def _ablations():
    from faseg_rt.bench.ablations import ablations, ablations_table
    return ablations, ablations_table


def _profile():
    from faseg_rt.bench.profile import profile, profile_table
    return profile, profile_table


def _precision():
    from faseg_rt.bench.precision import precision, precision_table
    return precision, precision_table


def _ops():
    from faseg_rt.bench.ops import ops, ops_table
    return ops, ops_table


def _vocab():
    from faseg_rt.bench.vocab import vocab, vocab_table
    return vocab, vocab_table


#: KIND -> loader of its (run(args) -> dict, table(dict) -> markdown); `gpu` runs its own plan
TABLE_BENCHMARKS = {"latency": _latency, "throughput": _throughput, "batching": _batching,
                    "workers": _workers, "ablations": _ablations,
                    "profile": _profile, "precision": _precision, "ops": _ops, "vocab": _vocab}


def _benchmark(what: str):
    """(run, table) of one benchmark."""
    if what not in TABLE_BENCHMARKS:
        raise ValueError(f"no benchmark {what!r}")
    return TABLE_BENCHMARKS[what]()


def register(subparsers) -> None:
    """Mount `faseg-rt bench ...` on the core CLI."""
    p = subparsers.add_parser("bench", description=DESCRIPTION)
    add_benchmarks(p.add_subparsers(dest="what", required=True, metavar="KIND"))
    p.set_defaults(func=cmd_bench)


def main(argv=None) -> int:
    from faseg_rt.threads import prefer_passive_wait

    prefer_passive_wait()  # before torch loads (faseg_rt/threads.py)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    return cmd_bench(build_parser().parse_args(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(main())
