"""Export stage: the four graphs to ONNX, checked against PyTorch, optionally TensorRT engines.

    python export/build_engines.py --model ID_OR_DIR --out DIR [--onnx-only] [--fp16]
                                   [--batch-sizes 1,2,4,8] [--opset N] [--force]
    faseg-rt export ...   (the same)

Stages, each printed with its time:
  1. model     hash the weights (the manifest's model identity);
  2. onnx      per graph: trace the graphs.py module with torch.onnx.export (dynamic batch axes),
               onnx.checker, run it in ONNX Runtime on random inputs of another batch size than
               the trace and compare with the PyTorch module; the max abs error per output is
               recorded and an error above tolerance fails the build;
  3. tensorrt  per graph (unless --onnx-only): build an engine with one optimisation profile
               covering --batch-sizes, fp16 when asked, a timing cache shared by the builds;
  4. manifest  DIR/manifest.json, written last.

Every file is written under a temporary name and renamed into place, and a graph's record
(`<file>.json`) only after its file, so an interrupted build never leaves a file that looks
complete; manifest.json is removed as soon as anything is rebuilt.  A rerun with the same
arguments reuses each graph / engine whose record matches (same model hash, opset, versions,
profile) and whose bytes still hash to the recorded sha256, and says "up to date"; --force
rebuilds everything.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from faseg_rt import rules
from faseg_rt.engines.cache import install, record_path, reuse
from faseg_rt.engines.manifest import (
    FORMAT,
    GRAPHS,
    MANIFEST,
    gpu_info,
    installed_versions,
    model_fingerprint,
    spec_to_json,
)
from faseg_rt.engines.onnx_export import check_onnx, export_onnx, graph_modules
from faseg_rt.errors import EngineError, InvalidInputError
from faseg_rt.io import atomic_write_json

DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 17, 20
#: The precision policy's network stage of each graph (faseg_rt.precision).
GRAPH_STAGE = {"text_encoder": "text_encoder", "vae_encoder": "vae_encoder", "unet": "unet",
               "unet_attn": "unet"}
DEFAULT_BATCH_SIZES = (1, 2, 4, 8)
#: Class-prompt chunks (77 tokens each) the TensorRT profile accepts per image.
DEFAULT_MAX_CLASS_CHUNKS = 4
#: Packages whose versions decide what an exported ONNX graph contains.
ONNX_KEY_VERSIONS = ("faseg_rt", "torch", "diffusers", "transformers", "onnx", "onnxruntime")


class Stage:
    """Prints "[stage] what ..." and, at the end, the time it took."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    @contextlib.contextmanager
    def __call__(self, what: str):
        t0 = time.perf_counter()
        self.log(f"[export] {what} ...")
        yield
        self.log(f"[export] {what}: done in {time.perf_counter() - t0:.1f} s")


def parse_batch_sizes(text) -> tuple[int, ...]:
    """'1,2,4,8' -> (1, 2, 4, 8): positive integers, sorted, deduplicated."""
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [x.strip() for x in str(text).split(",") if x.strip()]
    try:
        sizes = sorted({int(x) for x in items})
    except (TypeError, ValueError):
        raise InvalidInputError(f"batch_sizes must be integers >= 1 ('1,2,4' or [1, 2, 4]), got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise InvalidInputError(f"batch_sizes must be integers >= 1 ('1,2,4' or [1, 2, 4]), got {text!r}")
    return tuple(sizes)


# --------------------------------------------------------------------------- the build
def default_skip_cross(latent_size: int) -> tuple[int, ...]:
    """Latent resolutions whose class-aware maps the default config weighs by 0 (64 at 512 px):
    the exported unet_attn does not compute them (it returns zeros there)."""
    from faseg_rt.config import FASegConfig

    cfg = FASegConfig()
    if cfg.latent_size != latent_size:
        return ()
    return tuple(sorted(r for r, w in cfg.cross_weights.items() if w == 0))


def check_build_args(batch_sizes, opset, max_class_chunks, latent_size) -> tuple[tuple[int, ...], int]:
    """(batch sizes, max class chunks) parsed; a clear InvalidInputError for any argument out of range."""
    batch_sizes = parse_batch_sizes(batch_sizes)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise InvalidInputError(f"opset must be an integer from {MIN_OPSET} (LayerNormalization; below, "
                                f"LayerNorm is decomposed and overflows in fp16) to {MAX_OPSET} (the "
                                f"TorchScript exporter's maximum), got {opset!r}")
    max_class_chunks = rules.positive_int(max_class_chunks, "max_class_chunks")
    if isinstance(latent_size, bool) or not isinstance(latent_size, int) or latent_size < 8 or latent_size % 8:
        raise InvalidInputError(f"latent_size must be a positive multiple of 8, got {latent_size!r}")
    return batch_sizes, max_class_chunks


def build(model, out, *, onnx_only: bool = False, fp16: bool = False, batch_sizes=DEFAULT_BATCH_SIZES,
          opset: int = DEFAULT_OPSET, force: bool = False, max_class_chunks: int = DEFAULT_MAX_CLASS_CHUNKS,
          latent_size: int = 64, tf32: bool = False, skip_cross=None,
          log: Callable[[str], None] = print) -> dict:
    """Export (and with TensorRT, build) everything for `model` into `out`; returns the manifest.

    fp16: also export the fp16 graphs (fp16_graphs()) and build the engines from them.
    latent_size: the latent grid the graphs are exported for (64 for 512 px images).
    tf32: let fp32 TensorRT engines use TF32 (off: they match the fp32 graphs to 1e-4).
    skip_cross: resolutions whose class-aware maps unet_attn does not compute (default: those the
    default config weighs by 0); recorded in the manifest, and a config that weighs them is refused.
    """
    batch_sizes, max_class_chunks = check_build_args(batch_sizes, opset, max_class_chunks, latent_size)
    skip_cross = tuple(sorted(default_skip_cross(latent_size) if skip_cross is None else skip_cross))
    trt = None
    if not onnx_only:
        from faseg_rt.backends.tensorrt_runtime import require_tensorrt

        trt = require_tensorrt()  # fail fast, before minutes of export
    from faseg_rt.model import check_model_dir

    check_model_dir(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Stage(log)
    t_start = time.perf_counter()
    manifest_path = out / MANIFEST

    def invalidate():
        if manifest_path.exists():
            manifest_path.unlink()

    if force:
        invalidate()
    with stage("model: hashing weights"):
        fp = model_fingerprint(model)
    versions = installed_versions()
    base_key = {"model_sha256": fp["sha256"], "opset": opset, "latent_size": latent_size,
                "versions": {k: versions[k] for k in ONNX_KEY_VERSIONS}, "skip_cross": list(skip_cross)}
    modules = _module_loader(model, latent_size, skip_cross, stage)
    args = {"model": str(model), "onnx_only": onnx_only, "fp16": fp16, "batch_sizes": list(batch_sizes),
            "opset": opset, "max_class_chunks": max_class_chunks, "latent_size": latent_size, "tf32": tf32,
            "skip_cross": list(skip_cross)}
    work = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out))
    try:
        graphs = {name: _graph(out, work, name, "fp32", base_key, modules, force, stage, invalidate, log)
                  for name in GRAPHS}
        graphs_fp16 = None
        if fp16:
            graphs_fp16 = {name: _graph(out, work, name, "fp16", base_key, modules, force, stage, invalidate, log)
                           for name in fp16_graphs()}
        engines = None
        if not onnx_only:
            from faseg_rt.engines.tensorrt_build import build_engines

            sources = dict(graphs, **(graphs_fp16 or {}))
            engines = build_engines(trt, out, work, sources, graphs["unet_attn"]["dims"], fp16=fp16,
                                    batch_sizes=batch_sizes, max_class_chunks=max_class_chunks, gpu=gpu_info(),
                                    versions=versions, force=force, stage=stage, invalidate=invalidate,
                                    log=log, tf32=tf32)
        manifest = {"format": FORMAT,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "build_args": args, "model": fp, "dims": graphs["unet_attn"]["dims"], "versions": versions,
                    "graphs": graphs, "graphs_fp16": graphs_fp16, "engines": engines}
        manifest = _write_manifest(manifest_path, manifest, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"[export] all done in {time.perf_counter() - t_start:.1f} s")
    return manifest


def fp16_graphs() -> tuple[str, ...]:
    """The graphs exported in fp16 too with --fp16: those whose network row of the precision
    policy is fp16 under dtype float16.  The text encoder's says fp32 (faseg_rt.precision): its
    output is cached per prompt, its causal mask holds float32's minimum (beyond fp16), and the
    TorchScript trace of transformers' fp16 CLIP attention is not valid ONNX (LayerNormalization
    with mixed types); its fp32 graph serves the fp16 backends (manifest.graph_entries)."""
    import torch

    from faseg_rt.precision import stage_dtype

    return tuple(g for g in GRAPHS if stage_dtype(GRAPH_STAGE[g], torch.float16) == torch.float16)


def _module_loader(model, latent_size: int, skip_cross: tuple, stage):
    """precision -> graph_modules(...), loaded once per precision on first use."""
    loaded = {}

    def modules(precision):
        if precision not in loaded:
            import torch

            dtype = torch.float16 if precision == "fp16" else torch.float32
            with stage(f"loading {model} in PyTorch ({precision}, CPU)"):
                loaded[precision] = graph_modules(model, dtype, latent_size, skip_cross)
        return loaded[precision]

    return modules


def _write_manifest(path: Path, manifest: dict, log) -> dict:
    """Write the manifest last (kept as it is when it already describes this build)."""
    old = _read_json(path)
    if old is not None and _same_build(old, manifest):
        log(f"[export] manifest: up to date ({path})")
        return old
    atomic_write_json(path, manifest)
    log(f"[export] manifest: wrote {path}")
    return manifest


def _graph(out: Path, work: Path, name: str, precision: str, base_key: dict, modules, force, stage,
           invalidate, log) -> dict:
    """One checked graph in `out` (reused when up to date): export, check against PyTorch in
    ONNX Runtime, structure checks (engines/onnx_checks.py); its manifest entry."""
    from faseg_rt.engines.onnx_checks import check_structure

    file = f"{name}.onnx" if precision == "fp32" else f"{name}.fp16.onnx"
    label = name if precision == "fp32" else f"{name} (fp16)"
    key = dict(base_key, graph=name, precision=precision)
    if name != "unet_attn":  # the only graph the skipped maps change
        key.pop("skip_cross")
    entry = reuse(out, file, key, force, log, f"onnx {label}")
    if entry is not None:
        return entry
    invalidate()
    mods, specs, dims = modules(precision)
    gdir = work / f"{name}-{precision}"
    gdir.mkdir()
    with stage(f"onnx {label}: export"):
        files = export_onnx(mods[name], specs[name], dims, gdir, base_key["opset"], file=file)
    with stage(f"onnx {label}: check against PyTorch in ONNX Runtime"):
        check = check_onnx(mods[name], specs[name], dims, files[0])
    worst = max(check["max_abs_error"].items(), key=lambda kv: kv[1])
    log(f"[export] onnx {label}: max abs error {worst[1]:.2e} ({worst[0]})")
    spec_json = spec_to_json(specs[name])
    with stage(f"onnx {label}: structure checks"):
        skipped = tuple(f"cross_{r}" for r in key.get("skip_cross", ()))  # unet_attn's zero outputs
        structure, problems = check_structure(files[0], spec_json, precision, skipped)
    if problems:
        raise EngineError(f"the exported {name} graph ({precision}) fails the structure checks: "
                          + "; ".join(problems) + ". Nothing was installed.")
    stale = out / f"{file}.data"
    entry = {"file": file, "files": install(files, out), "opset": base_key["opset"],
             "dtype": "float16" if precision == "fp16" else "float32", "precision": precision,
             **spec_json, "check": check, "structure": structure, "dims": _dims_json(dims)}
    if stale.exists() and stale.name not in entry["files"]:
        stale.unlink()
    atomic_write_json(record_path(out, file), {"key": key, "entry": entry, "files": entry["files"]})
    return entry


def _dims_json(dims) -> dict:
    from dataclasses import asdict

    return asdict(dims)


def _read_json(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _same_build(old: dict, new: dict) -> bool:
    """Whether an existing manifest describes exactly this build (everything but the time)."""
    return {k: v for k, v in old.items() if k != "created"} == {k: v for k, v in new.items() if k != "created"}


# --------------------------------------------------------------------------- command line
