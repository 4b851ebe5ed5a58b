"""What each kind of `faseg-rt bench gpu` step measures (faseg_rt/bench/gpu_plan.py lists them).

Every step writes OUT/<step>.json the moment it has a number (`Record.put`), so a step killed at
its time limit keeps what it measured.  fp16 on CUDA; --dry runs fp32 on the CPU with the 64 px
config and one iteration.  Eager batch-1 results are kept in OUT/ref/ so the CUDA-graph and
compiled steps (other processes) compare their masks with eager without loading it again.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from faseg_rt.bench.gpu_plan import VARIANTS, Step, key_digest, run_key
from faseg_rt.io import atomic_write_json

CLASSES = ["sky", "ball", "box", "person", "tree"]


class Skip(Exception):
    """A step (or part of one) that cannot run here; the message says why."""


class Record:
    """A step's JSON: {status, seconds, result, key, reason?}, rewritten on every `put`; key
    (gpu_plan.run_key) says which runs may keep it."""

    def __init__(self, path: Path, key: dict | None = None):
        self.path = Path(path)
        self.t0 = time.perf_counter()
        self.data: dict = {"status": "running", "seconds": 0.0, "result": {}, "key": key}

    def put(self, key: str, value) -> None:
        self.data["result"][key] = value
        self._write()

    def finish(self, status: str, reason: str | None = None) -> dict:
        self.data["status"] = status
        if reason:
            self.data["reason"] = reason
        self._write()
        return self.data

    def _write(self) -> None:
        self.data["seconds"] = time.perf_counter() - self.t0
        atomic_write_json(self.path, self.data)


def run_step(step: Step, args) -> dict:
    """Run one step in this process; its record (also written to OUT/<step>.json)."""
    rec = Record(Path(args.out) / f"{step.name}.json", run_key(step, args))
    try:
        KINDS[step.kind](step, args, rec)
        out = rec.finish("ok")
    except Skip as e:
        out = rec.finish("skipped", str(e))
    except Exception as e:  # recorded, so the next step still runs
        from faseg_rt.errors import BackendUnavailableError

        out = rec.finish("skipped" if isinstance(e, BackendUnavailableError) else "error", f"{type(e).__name__}: {e}")
    print(f"[bench gpu] {step.name}: {out['status']} in {out['seconds']:.1f} s", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------- helpers
def _device(args) -> str:
    return "cpu" if args.dry else "cuda"


def _model(args, step: Step) -> Path:
    from faseg_rt.bench.common import resolve_model

    return resolve_model(step.model, Path(args.cache))


def _dry_config():
    from faseg_rt.config import FASegConfig

    rs = (1, 2, 4, 8)
    return FASegConfig(image_size=64, latent_size=8, cross_weights=dict(zip(rs, (0.15, 0.70, 0.15, 0.0))),
                       self_weights=dict(zip(rs, (0.1, 0.1, 0.5, 0.3))))


def _segmenter(args, step: Step, dtype, **kw):
    from faseg_rt.segmenter import Segmenter

    return Segmenter.from_pretrained(_model(args, step), device=_device(args), dtype=dtype,
                                     config=_dry_config() if args.dry else None, **kw)


def _image(args):
    from faseg_rt.testing import synthetic_image

    return synthetic_image(96 if args.dry else 640, 64 if args.dry else 480, seed=3)


def _timed(fn) -> float:
    """Milliseconds of fn(), the GPU's work included."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def compare(a, b) -> dict:
    """Score and label agreement of two results (objects with .scores and .labels)."""
    import numpy as np

    a_s, b_s = np.asarray(a.scores), np.asarray(b.scores)
    return {"max_abs_scores": float(np.abs(a_s - b_s).max()),
            "labels_equal": float((np.asarray(a.labels) == np.asarray(b.labels)).mean())}


def _ref_path(args, step: Step, dtype) -> Path:
    """Eager batch-1 masks for the graphs / compiled steps of the same run key (never a dry
    run's for a real one, nor older code's)."""
    eager = select_eager(step)
    name = f"eager-{step.model}-{str(dtype).removeprefix('torch.')}-{key_digest(run_key(eager, args))}.npz"
    return Path(args.out) / "ref" / name


def select_eager(step: Step) -> Step:
    """The eager batch-1 step of `step`'s model (the one that writes the reference masks)."""
    from dataclasses import replace

    return replace(step, name=f"eager-b1-{step.model}", kind="latency", variant="eager", batch=1)


# ----------------------------------------------------------------------------- kinds
def step_env(step: Step, args, rec: Record) -> None:
    import importlib.metadata as md

    rec.put("torch", torch.__version__)
    rec.put("cuda", torch.version.cuda)
    for pkg in ("diffusers", "transformers", "huggingface-hub", "onnx", "onnxruntime", "onnxruntime-gpu",
                "polygraphy", "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "triton"):
        try:
            rec.put(pkg, md.version(pkg))
        except md.PackageNotFoundError:
            rec.put(pkg, None)
    if torch.cuda.is_available() and not args.dry:
        rec.put("gpu", torch.cuda.get_device_name())
        rec.put("compute_capability", ".".join(map(str, torch.cuda.get_device_capability())))
        rec.put("flash_sdpa", _flash_sdpa_runs())


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


def step_parity(step: Step, args, rec: Record) -> None:
    """fp16 against fp32, eager, one image: the masks a user of the fp16 default gets."""
    image = _image(args)
    t0 = time.perf_counter()
    ref32 = _segmenter(args, step, torch.float32)(image, classes=CLASSES)
    rec.put("fp32_load_and_call_s", time.perf_counter() - t0)
    if args.dry:
        rec.put("fp16_vs_fp32", "skipped: fp16 needs CUDA")
        return
    rec.put("fp16_vs_fp32", compare(_segmenter(args, step, torch.float16)(image, classes=CLASSES), ref32))


def step_reference(step: Step, args, rec: Record) -> None:
    """fp32 eager against the literal reference (on the CPU, as written; tiny model)."""
    from types import SimpleNamespace

    from faseg_rt.method.reference import ReferenceFASeg
    from faseg_rt.model import load_modules, load_tokenizer

    if args.dry:
        raise Skip("the reference runs at 512 px; --dry uses the 64 px config")
    image = _image(args)
    got = _segmenter(args, step, torch.float32)(image, classes=CLASSES)
    model = _model(args, step)
    vae, te, unet = load_modules(model)
    with torch.no_grad():
        scores, labels = ReferenceFASeg(vae, te, unet, load_tokenizer(model))(image, CLASSES, None)
    rec.put("fp32_vs_reference", compare(got, SimpleNamespace(scores=scores, labels=labels)))


def step_latency(step: Step, args, rec: Record) -> None:
    """One variant at one batch size: load, first call (compile / capture), timed calls."""
    import numpy as np

    dtype = torch.float32 if args.dry else torch.float16
    rec.put("model", step.model)
    rec.put("dtype", str(dtype).removeprefix("torch."))
    image = _image(args)
    t0 = time.perf_counter()
    seg = _segmenter(args, step, dtype, **VARIANTS[step.variant])
    rec.put("load_s", time.perf_counter() - t0)
    images = [image] * step.batch
    call = (lambda: seg(image, classes=CLASSES)) if step.batch == 1 else \
        (lambda: seg.segment_batch(images, CLASSES, batch_size=step.batch, batch_invariant=False))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rec.put("first_call_s", _timed(call) / 1e3)
    times = []
    for _ in range(args.iters):
        times.append(_timed(call))
        rec.put("latency_ms", _summary(times))
    rec.put("images_per_s", step.batch / (statistics.median(times) / 1e3))  # what a user sees, not the best case
    if torch.cuda.is_available():
        rec.put("peak_allocated_gib", torch.cuda.max_memory_allocated() / 2**30)
    if step.batch != 1:
        return
    got = seg(image, classes=CLASSES)
    ref = _ref_path(args, step, dtype)
    if step.variant == "eager":
        ref.parent.mkdir(parents=True, exist_ok=True)
        np.savez(ref, scores=np.asarray(got.scores), labels=np.asarray(got.labels))
    elif ref.is_file():
        from types import SimpleNamespace

        with np.load(ref) as z:
            rec.put("vs_eager", compare(got, SimpleNamespace(scores=z["scores"], labels=z["labels"])))
    else:
        rec.put("vs_eager", f"skipped: no {ref.name} (run eager-b1-{step.model} first)")


def _summary(ms: list[float]) -> dict:
    from faseg_rt.bench.common import summarize

    return summarize(ms)


def step_exported(step: Step, args, rec: Record) -> None:
    """fp16 graphs (and engines) of the model, validated against golden ONNX Runtime CPU
    outputs, then the backend's latency and masks next to torch fp16 on one image."""
    from faseg_rt.engines.build import build
    from faseg_rt.engines.golden import save_golden, validate
    from faseg_rt.segmenter import Segmenter

    backend = step.kind
    if args.dry or not torch.cuda.is_available():
        raise Skip(f"{backend} on a GPU needs CUDA")
    model = _model(args, step)
    engines = Path(args.out) / f"engines-{step.model}"
    t0 = time.perf_counter()
    build(model, engines, onnx_only=backend != "tensorrt", fp16=True, batch_sizes=(1, 2), log=print)
    rec.put("build_s", time.perf_counter() - t0)
    golden = Path(args.out) / f"golden-{step.model}-fp16"
    save_golden(engines, golden, fp16=True)
    seg = Segmenter.from_pretrained(model, backend=backend, engines=engines, device="cuda", dtype=torch.float16)
    rec.put("validate", validate(seg.backend, golden))
    image = _image(args)
    torch_seg = Segmenter.from_pretrained(model, device="cuda", dtype=torch.float16)
    for name, s in ((backend, seg), ("torch", torch_seg)):
        s(image, classes=CLASSES)
        rec.put(f"{name}_latency_ms", statistics.median(_timed(lambda: s(image, classes=CLASSES))
                                                       for _ in range(args.iters)))
    rec.put(f"{backend}_vs_torch", compare(seg(image, classes=CLASSES), torch_seg(image, classes=CLASSES)))


KINDS = {"env": step_env, "parity": step_parity, "reference": step_reference, "latency": step_latency,
         "tensorrt": step_exported, "onnxruntime": step_exported}
