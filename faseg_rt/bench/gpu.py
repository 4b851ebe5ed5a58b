"""`faseg-rt bench gpu` / benchmarks/gpu.sh: what a lent GPU should measure, in one command.

Each step runs in its own process with a 9-minute limit (a hung or crashed step is recorded and
the next one runs) and writes OUT/<step>.json; at the end OUT/summary.json and OUT/summary.md
gather them.  Steps (benchmarks/README.md, "On a GPU"):

  env          versions, the GPU, whether flash SDPA runs, tensorrt / onnxruntime-gpu importable
  parity-M     torch fp16 vs fp32 vs the literal reference (fp32), and compiled / CUDA-graph runs
               vs eager, on model M (tiny, full: random SD 1.5-shaped weights)
  torch-M      latency (batch 1) and throughput (batch 1, 4, 8) for eager, compiled, CUDA graphs
  tensorrt     fp16 engines of the tiny model, validated against ONNX Runtime golden outputs, and
               their latency; skipped with the reason when tensorrt is not importable
  onnxruntime  the same for onnxruntime-gpu (CUDAExecutionProvider)

`--dry` runs the same steps on the CPU with the 64 px config, one iteration, batch 1 only, and
skips what needs CUDA (fp16, CUDA graphs, compile, tensorrt, onnxruntime-gpu) with the reason, so the
command is exercised by CI and cannot rot unnoticed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from faseg_rt.io import atomic_write_bytes, atomic_write_json

STEP_TIMEOUT_S = 540
CLASSES = ["sky", "ball", "box", "person", "tree"]


class Skip(Exception):
    """A step (or part of one) that cannot run here; the message says why."""


# ----------------------------------------------------------------------------- steps
def step_env(args) -> dict:
    import importlib.metadata as md

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    for pkg in ("diffusers", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "polygraphy",
                "tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        info["flash_sdpa"] = _flash_sdpa_runs()
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = None
    try:
        from faseg_rt.engines.tensorrt_build import require_tensorrt

        info["tensorrt_usable"] = require_tensorrt().__version__
    except Exception as e:  # BackendUnavailableError says why
        info["tensorrt_usable"] = f"no: {e}"
    return info


def _flash_sdpa_runs() -> str:
    """'yes' when the flash kernel runs SD 1.5's self-attention shape (8 heads x 40) in fp16."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(2, 8, 4096, 40, device="cuda", dtype=torch.float16)
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
        torch.cuda.synchronize()
        return "yes"
    except RuntimeError as e:
        return f"no: {str(e).splitlines()[0]}"


_LOADED: dict = {}


def _segmenter(args, model, **kw):
    """Segmenter.from_pretrained for this step; in --dry runs the eager fp32 one is loaded once
    and shared by the steps (in a subprocess per step nothing is shared anyway)."""
    from faseg_rt.segmenter import Segmenter

    device = "cpu" if args.dry else "cuda"
    config = _dry_config() if args.dry else None
    key = (str(model), tuple(sorted((k, str(v)) for k, v in kw.items())))
    if not args.dry:
        return Segmenter.from_pretrained(model, device=device, config=config, **kw)
    if key not in _LOADED:
        _LOADED[key] = Segmenter.from_pretrained(model, device=device, config=config, **kw)
    return _LOADED[key]


def _dry_config():
    from faseg_rt.config import FASegConfig

    rs = (1, 2, 4, 8)
    return FASegConfig(image_size=64, latent_size=8, cross_weights=dict(zip(rs, (0.15, 0.70, 0.15, 0.0))),
                       self_weights=dict(zip(rs, (0.1, 0.1, 0.5, 0.3))))


def _compare(a, b) -> dict:
    import numpy as np

    return {"max_abs_scores": float(np.abs(a.scores - b.scores).max()),
            "labels_equal": float((a.labels == b.labels).mean())}


def _variants(args) -> dict:
    """{name: Segmenter.from_pretrained kwargs} of the torch fast-path variants to run here."""
    out = {"eager": {}}
    if args.dry:
        return out  # compile of the networks takes minutes on a CPU; CUDA graphs need CUDA
    out["compiled"] = {"compile": True}
    out["cuda_graphs"] = {"cuda_graphs": True}
    out["compiled+cuda_graphs"] = {"compile": True, "cuda_graphs": True}
    return out


def step_parity(args) -> dict:
    from faseg_rt.testing import synthetic_image

    model = _model(args)
    image = synthetic_image(96 if args.dry else 640, 64 if args.dry else 480, seed=3)
    res = {"model": args.model}
    base = _segmenter(args, model, dtype=torch.float32)
    ref32 = base(image, classes=CLASSES)
    if args.dry:
        res["fp16_vs_fp32"] = "skipped: fp16 needs CUDA"
        res["fp32_vs_reference"] = "skipped: the reference runs at 512 px; dry mode uses the 64 px config"
    else:
        res["fp16_vs_fp32"] = _compare(_segmenter(args, model, dtype=torch.float16)(image, classes=CLASSES), ref32)
        res["fp32_vs_reference"] = _compare(ref32, _reference(model, image)) if args.model == "tiny" else \
            "skipped: the literal reference runs on the CPU; at SD 1.5 width it takes far over the step limit"
    for name, kw in _variants(args).items():
        if name == "eager":
            continue
        t0 = time.perf_counter()
        seg = _segmenter(args, model, dtype=torch.float32, **kw)
        got = seg(image, classes=CLASSES)
        res[f"{name}_vs_eager"] = dict(_compare(got, ref32), first_call_s=time.perf_counter() - t0)
    return res


def _reference(model, image):
    """The literal reference's result (fp32, on the CPU: it is written for the CPU) with the
    Segmenter's result fields."""
    from types import SimpleNamespace

    from faseg_rt.model import load_modules, load_tokenizer
    from faseg_rt.method.reference import ReferenceFASeg

    vae, te, unet = load_modules(model)
    ref = ReferenceFASeg(vae, te, unet, load_tokenizer(model))
    with torch.no_grad():
        scores, labels = ref(image, CLASSES, None)
    return SimpleNamespace(scores=scores, labels=labels)


def step_torch(args) -> dict:
    from faseg_rt.bench.common import summarize
    from faseg_rt.testing import synthetic_image

    model = _model(args)
    image = synthetic_image(96 if args.dry else 640, 64 if args.dry else 480, seed=3)
    dtype = torch.float32 if args.dry else torch.float16
    batches = (1,) if args.dry else (1, 4, 8)
    res = {"model": args.model, "dtype": str(dtype).removeprefix("torch."), "variants": {}}
    for name, kw in _variants(args).items():
        t0 = time.perf_counter()
        seg = _segmenter(args, model, dtype=dtype, **kw)
        seg(image, classes=CLASSES)  # warm-up: compiles / captures here
        first = time.perf_counter() - t0
        lat = []
        for _ in range(args.iters):
            lat.append(_timed(lambda: seg(image, classes=CLASSES)))
        thr = {}
        for b in batches:
            imgs = [image] * b
            if b > 1:  # batch 1 was warmed up above
                seg.segment_batch(imgs, CLASSES, batch_size=b)
            s = _timed(lambda: seg.segment_batch(imgs, CLASSES, batch_size=b))
            thr[str(b)] = b / (s / 1e3)
        res["variants"][name] = {"first_call_s": first, "latency_ms": summarize(lat), "images_per_s": thr}
    if args.dry:
        res["skipped"] = "compiled and CUDA-graph variants need a GPU run (compile takes minutes on a CPU)"
    return res


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def _model(args) -> Path:
    from faseg_rt.bench.common import resolve_model

    return resolve_model(args.model, Path(args.cache))


def _exported_step(args, backend: str) -> dict:
    """fp16 graphs (and engines) of the tiny model, validated against golden ORT-CPU outputs,
    then the latency of `backend` next to torch fp16 on the same image."""
    from faseg_rt.engines.build import build
    from faseg_rt.engines.golden import save_golden, validate
    from faseg_rt.segmenter import Segmenter
    from faseg_rt.testing import synthetic_image

    if args.dry or not torch.cuda.is_available():
        raise Skip(f"{backend} on a GPU needs CUDA")
    if backend == "tensorrt":
        from faseg_rt.engines.tensorrt_build import require_tensorrt

        require_tensorrt()  # raises BackendUnavailableError with the reason
    else:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")
    model = _model(args)
    engines = Path(args.out) / f"engines-{args.model}"
    t0 = time.perf_counter()
    build(model, engines, onnx_only=backend != "tensorrt", fp16=True, batch_sizes=(1, 2), log=print)
    res = {"model": args.model, "build_s": time.perf_counter() - t0}
    golden = Path(args.out) / f"golden-{args.model}-fp16"
    save_golden(engines, golden, fp16=True)
    seg = Segmenter.from_pretrained(model, backend=backend, engines=engines, device="cuda", dtype=torch.float16)
    res["validate"] = validate(seg.backend, golden)
    image = synthetic_image(640, 480, seed=3)
    torch_seg = Segmenter.from_pretrained(model, device="cuda", dtype=torch.float16)
    for name, s in ((backend, seg), ("torch", torch_seg)):
        s(image, classes=CLASSES)
        res[f"{name}_latency_ms"] = min(_timed(lambda: s(image, classes=CLASSES)) for _ in range(args.iters))
    res[f"{backend}_vs_torch"] = _compare(seg(image, classes=CLASSES), torch_seg(image, classes=CLASSES))
    return res


STEPS = {"env": step_env, "parity": step_parity, "torch": step_torch,
         "tensorrt": lambda a: _exported_step(a, "tensorrt"),
         "onnxruntime": lambda a: _exported_step(a, "onnxruntime")}
PER_MODEL = ("parity", "torch")


def plan(models) -> list[tuple[str, str]]:
    """[(step, model)] in the order they run: cheap and most telling first."""
    out = [("env", "tiny")]
    for step in PER_MODEL:
        out += [(step, m) for m in models]
    return out + [("tensorrt", "tiny"), ("onnxruntime", "tiny")]


def run_one(args) -> int:
    """One step in this process: OUT/<step>[-model].json with {status, seconds, result | reason}."""
    name = args.step if args.step not in PER_MODEL else f"{args.step}-{args.model}"
    t0 = time.perf_counter()
    try:
        rec = {"status": "ok", "result": STEPS[args.step](args)}
    except Skip as e:
        rec = {"status": "skipped", "reason": str(e)}
    except Exception as e:  # recorded, so the next step still runs
        from faseg_rt.errors import BackendUnavailableError

        status = "skipped" if isinstance(e, BackendUnavailableError) else "error"
        rec = {"status": status, "reason": f"{type(e).__name__}: {e}"}
    rec["seconds"] = time.perf_counter() - t0
    atomic_write_json(Path(args.out) / f"{name}.json", rec)
    print(f"[bench gpu] {name}: {rec['status']} in {rec['seconds']:.1f} s", file=sys.stderr)
    return 0


def run_all(args) -> dict:
    """Every step of plan(), each in a fresh process under STEP_TIMEOUT_S; then the summary."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"dry": args.dry, "steps": {}}
    for step, model in plan(args.models.split(",")):
        name = step if step not in PER_MODEL else f"{step}-{model}"
        if args.in_process:  # tests: the same steps without a fresh interpreter each
            run_one(argparse.Namespace(**dict(vars(args), step=step, model=model)))
            summary["steps"][name] = json.loads((out / f"{name}.json").read_text())
            continue
        cmd = [sys.executable, "-m", "faseg_rt.bench.gpu", "_step", step, "--model", model, "--out", str(out),
               "--cache", args.cache, "--iters", str(args.iters)] + (["--dry"] if args.dry else [])
        try:
            subprocess.run(cmd, timeout=STEP_TIMEOUT_S, check=False)
            rec = json.loads((out / f"{name}.json").read_text())
        except subprocess.TimeoutExpired:
            rec = {"status": "error", "reason": f"timed out after {STEP_TIMEOUT_S} s"}
        except (OSError, ValueError) as e:
            rec = {"status": "error", "reason": f"the step wrote no result ({type(e).__name__}: {e})"}
        summary["steps"][name] = rec
    atomic_write_json(out / "summary.json", summary)
    atomic_write_bytes(out / "summary.md", summary_markdown(summary).encode())
    return summary


def summary_markdown(summary: dict) -> str:
    """One table of step statuses, then each step's result as indented JSON."""
    lines = [f"# faseg-rt bench gpu{' (dry run, CPU)' if summary['dry'] else ''}", "",
             "| step | status | seconds | note |", "|---|---|---|---|"]
    for name, rec in summary["steps"].items():
        note = rec.get("reason", "").replace("|", "/")[:120]
        lines.append(f"| {name} | {rec['status']} | {rec.get('seconds', 0):.1f} | {note} |")
    for name, rec in summary["steps"].items():
        if rec["status"] == "ok":
            lines += ["", f"## {name}", "", "```json", json.dumps(rec["result"], indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"


def add_arguments(p) -> None:
    import os
    import tempfile

    p.add_argument("--out", default="benchmarks/results/gpu", help="folder for the JSON and markdown")
    p.add_argument("--dry", action="store_true", help="CPU, 64 px config, 1 iteration, skip what needs CUDA")
    p.add_argument("--models", default="tiny,full", help="random models for parity and torch steps")
    p.add_argument("--iters", type=int, default=None, help="timed calls per measurement (default 10; dry 1)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "faseg_rt_bench_models"))
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # tests


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["_step"]:
        p = argparse.ArgumentParser(prog="faseg_rt.bench.gpu _step")
        p.add_argument("step", choices=sorted(STEPS))
        p.add_argument("--model", default="tiny")
        add_arguments(p)
        args = p.parse_args(argv[1:])
        return run_one(args)
    p = argparse.ArgumentParser(prog="faseg-rt bench gpu", description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    if args.iters is None:
        args.iters = 1 if args.dry else 10
    if args.dry:
        args.models = "tiny"
    summary = run_all(args)
    bad = [n for n, r in summary["steps"].items() if r["status"] == "error"]
    print(f"[bench gpu] wrote {args.out}/summary.md" + (f"; errors in {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
