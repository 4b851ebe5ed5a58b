"""`faseg-rt bench latency|throughput|ablations|profile` and the scripts in benchmarks/."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from faseg_rt import rules
from faseg_rt.bench.ablations import ablations, ablations_table
from faseg_rt.bench.latency import latency, latency_table
from faseg_rt.bench.precision import precision, precision_table
from faseg_rt.bench.profile import profile, profile_table
from faseg_rt.bench.throughput import _throughput_one, throughput, throughput_table
from faseg_rt.bench.vocab import DEFAULT_KS, vocab, vocab_table
from faseg_rt.io import atomic_write_json


def add_common(p):
    p.add_argument("--model", default="tiny", help="'tiny', 'full' (random SD 1.5 widths) or a model dir/id")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=rules.DTYPE_CHOICES)
    p.add_argument("--engines", default=None)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "faseg_rt_bench_models"))
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--tag", default=None, help="suffix of the result file name")


def build_parser():
    p = argparse.ArgumentParser(prog="faseg-rt bench")
    sub = p.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency", help="per-stage latency at batch 1 vs reference and floor")
    add_common(lat)
    lat.add_argument("--backends", default="torch")
    lat.add_argument("--classes", default="sky,ball,box,person,tree")
    lat.add_argument("--caption", default="coloured shapes on a plain background")
    lat.add_argument("--warmup", type=int, default=1)
    lat.add_argument("--iters", type=int, default=5)
    lat.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True)
    lat.add_argument("--ref-iters", type=int, default=1)
    lat.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    lat.add_argument("--frontend", default="none", choices=["none", "tiny", "real"],
                     help="also caption and recognise (caption/candidates 'auto') with random BLIP + "
                          "SigLIP: 'real' = BLIP-large + SigLIP-base sizes, 'tiny' = the test models")
    lat.add_argument("--frontend-batch-sizes", default="1,4",
                     help="batch sizes of the front-end batching table")
    thr = sub.add_parser("throughput", help="images/s and peak memory over batch sizes")
    add_common(thr)
    thr.add_argument("--backend", default="torch")
    thr.add_argument("--batch-sizes", default="1,2,4")
    thr.add_argument("--images", type=int, default=8)
    abl = sub.add_parser("ablations", help="each optimisation against the plain way, same tensors")
    add_common(abl)
    abl.add_argument("--classes", type=int, default=5)
    abl.add_argument("--repeats", type=int, default=3)
    prof = sub.add_parser("profile", help="torch.profiler: top operators of one warm call")
    add_common(prof)
    prof.add_argument("--classes", default="sky,ball,box,person,tree")
    prof.add_argument("--top", type=int, default=15)
    voc = sub.add_parser("vocab", help="time by stage and extra memory for K = 1 .. 1000 classes")
    add_common(voc)
    voc.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)), help="class counts, e.g. 1,20,150")
    voc.add_argument("--repeats", type=int, default=1, help="calls per K (the fastest is kept)")
    voc.add_argument("--scores-max", type=int, default=150,
                     help="also measure the call with return_scores=True for K up to this")
    pre = sub.add_parser("precision", help="fp32 vs --dtype (bf16): masks, time, stage errors vs float64")
    add_common(pre)
    pre.add_argument("--cases", type=int, default=2, help="parity photographs to run (1 or 2)")
    pre.add_argument("--oracle", action=argparse.BooleanOptionalAction, default=True,
                     help="stage errors against the float64 oracle (tiny widths: minutes at full width)")
    one = sub.add_parser("_throughput_one")
    add_common(one)
    one.add_argument("--backend", default="torch")
    one.add_argument("--batch", type=int, required=True)
    one.add_argument("--images", type=int, required=True)
    return p


def run(args) -> int:
    if args.what == "_throughput_one":
        _throughput_one(args)
        return 0
    run_fn, table_fn = {"latency": (latency, latency_table), "throughput": (throughput, throughput_table),
                        "ablations": (ablations, ablations_table),
                        "profile": (profile, profile_table), "vocab": (vocab, vocab_table),
                        "precision": (precision, precision_table)}[args.what]
    res = run_fn(args)
    table = table_fn(res)
    res["markdown"] = table
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tag = args.tag or f"{args.model if args.model in ('tiny', 'full') else 'model'}-{res.get('device', args.device or 'auto')}"
    path = Path(args.out) / f"{args.what}-{tag}.json".replace(":", "")
    atomic_write_json(path, res)
    print(table)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """`faseg-rt bench latency|throughput|ablations|profile|gpu ...`"""
    p = subparsers.add_parser("bench", help="latency / throughput benchmarks (see benchmarks/README.md)",
                              add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: _dispatch(a.rest))


def _dispatch(rest: list[str]) -> int:
    if rest[:1] == ["gpu"]:  # its own steps and options (faseg_rt/bench/gpu.py)
        from faseg_rt.bench.gpu import main as gpu_main

        return gpu_main(rest[1:])
    return run(build_parser().parse_args(rest))


def main(argv=None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    return _dispatch(sys.argv[1:] if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
