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

import argparse
import contextlib
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from .engines import (GRAPHS, MANIFEST, FORMAT, check_files, file_sha256, gpu_info, installed_versions,
                      model_fingerprint, spec_to_json)
from .errors import EngineError, InvalidInputError
from .io import atomic_write_json

DEFAULT_OPSET = 17
DEFAULT_BATCH_SIZES = (1, 2, 4, 8)
#: Class-prompt chunks (77 tokens each) the TensorRT profile accepts per image.
DEFAULT_MAX_CLASS_CHUNKS = 4
#: Above this many bytes a graph is saved with its weights in one external data file (protobuf
#: cannot hold more than 2 GiB).
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2
#: Check tolerance per output: ATOL + RTOL * max |PyTorch output| (fp32 graphs vs fp32 torch).
ATOL, RTOL = 1e-4, 1e-3
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
        raise InvalidInputError(f"--batch-sizes must be comma-separated positive integers, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise InvalidInputError(f"--batch-sizes must be comma-separated positive integers, got {text!r}")
    return tuple(sizes)


# --------------------------------------------------------------------------- ONNX
def graph_modules(model):
    """The graphs.py modules of `model` in fp32 on the CPU, their specs and the model dims."""
    import torch

    from .attention import install_processors
    from .graphs import TextEncoderGraph, UNetAttnGraph, UNetGraph, VaeEncoderGraph, graph_specs
    from .model import load_modules, model_dims

    vae, te, unet = load_modules(model, dtype=torch.float32)
    install_processors(unet)
    dims = model_dims(vae, te, unet)
    mods = {"text_encoder": TextEncoderGraph(te), "vae_encoder": VaeEncoderGraph(vae),
            "unet": UNetGraph(unet), "unet_attn": UNetAttnGraph(unet, dims.resolutions)}
    return mods, graph_specs(dims, "float32"), dims


def example_inputs(spec, dims, sizes: dict, seed: int = 0) -> dict:
    """Random inputs for a graph, with the named dimensions set from `sizes` (N, J, P)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for ts in spec.inputs:
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in ts.shape)
        if ts.name == "input_ids":
            out[ts.name] = torch.randint(0, 49408, shape, generator=g, dtype=torch.int64)
        elif ts.name == "timestep":
            out[ts.name] = torch.tensor([1], dtype=torch.int64)  # the method's inversion timestep
        elif ts.name == "pixels":
            out[ts.name] = torch.rand(shape, generator=g) * 2 - 1
        else:
            out[ts.name] = torch.randn(shape, generator=g)
    return out


def dynamic_axes(spec) -> dict:
    """ONNX dynamic axes: every named dimension (N, J, P) of every input and output."""
    axes = {}
    for ts in spec.inputs + spec.outputs:
        named = {i: d for i, d in enumerate(ts.shape) if isinstance(d, str)}
        if named:
            axes[ts.name] = named
    return axes


def export_onnx(module, spec, dims, workdir: Path, opset: int,
                external_threshold: int = EXTERNAL_DATA_THRESHOLD) -> list[Path]:
    """Trace `module` to workdir/<name>.onnx (+ <name>.onnx.data when large); returns the files."""
    import onnx
    import torch

    raw = workdir / "raw"
    raw.mkdir()
    path = raw / f"{spec.name}.onnx"
    inputs = example_inputs(spec, dims, {"N": 2, "J": 2, "P": 2})
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python asserts on shapes
        torch.onnx.export(module, tuple(inputs[n] for n in spec.input_names), str(path),
                          input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=dynamic_axes(spec), opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    final = workdir / path.name
    size = sum(p.stat().st_size for p in raw.iterdir())
    if size > external_threshold or len(list(raw.iterdir())) > 1:
        proto = onnx.load(str(path), load_external_data=True)
        onnx.save_model(proto, str(final), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{final.name}.data", size_threshold=1024)
        files = [final, workdir / f"{final.name}.data"]
    else:
        os.replace(path, final)
        files = [final]
    shutil.rmtree(raw)
    try:
        onnx.checker.check_model(str(final))
    except onnx.checker.ValidationError as e:
        raise EngineError(f"onnx.checker rejects the exported {spec.name} graph: {e}") from None
    return files


def check_onnx(module, spec, dims, path: Path, sizes=None) -> dict:
    """Run the graph in ONNX Runtime (CPU) and the module in PyTorch on the same random inputs.

    The sizes differ from the trace's (N=2, J=2, P=2), so the dynamic axes are exercised too.
    Returns {max_abs_error, tolerance, batch}; raises EngineError above tolerance.
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    sizes = sizes or {"N": 1, "J": 1, "P": 3}
    inputs = example_inputs(spec, dims, sizes, seed=1)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(spec.output_names, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        ref = module(*(inputs[n] for n in spec.input_names))
    if isinstance(ref, torch.Tensor):
        ref = (ref,)
    errors, tols, bad = {}, {}, []
    for name, g, r in zip(spec.output_names, got, ref):
        r = r.float().numpy()
        if g.shape != r.shape:
            bad.append(f"{name}: shape {g.shape} vs PyTorch {r.shape}")
            continue
        err = float(np.max(np.abs(g.astype(np.float64) - r))) if r.size else 0.0
        tol = ATOL + RTOL * float(np.max(np.abs(r))) if r.size else ATOL
        errors[name], tols[name] = err, tol
        if not np.isfinite(err) or err > tol:
            bad.append(f"{name}: max abs error {err:.3g} > tolerance {tol:.3g}")
    if bad:
        raise EngineError(f"the exported {spec.name} graph does not match PyTorch on random inputs "
                          f"({sizes}): " + "; ".join(bad) + ". Nothing was installed; this is a bug "
                          "in the export (or an unsupported model), please report it.")
    return {"max_abs_error": errors, "tolerance": tols, "sizes": sizes}


# --------------------------------------------------------------------------- records
def _record_path(out: Path, file: str) -> Path:
    return out / f"{file}.json"


def _up_to_date(out: Path, file: str, key: dict) -> dict | None:
    """The record of `file` if it was built with `key` and its files are intact, else None."""
    import json

    rec_path = _record_path(out, file)
    if not rec_path.is_file():
        return None
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("key") != key or check_files(out, rec):
        return None
    return rec


def _reuse(out: Path, file: str, key: dict, force: bool, log, what: str) -> dict | None:
    """The manifest entry of `file` when it is up to date (and not --force), saying so; else None."""
    rec = None if force else _up_to_date(out, file, key)
    if rec is None:
        return None
    log(f"[export] {what}: up to date ({file}), skipped")
    return rec["entry"]


def _install(files: list[Path], out: Path) -> dict:
    """Move finished files from the work dir into `out` (data before the graph that needs it)."""
    shas = {}
    for f in sorted(files, key=lambda p: p.suffix != ".data"):
        shas[f.name] = file_sha256(f)
        os.replace(f, out / f.name)
    return shas


# --------------------------------------------------------------------------- the build
def build(model, out, *, onnx_only: bool = False, fp16: bool = False, batch_sizes=DEFAULT_BATCH_SIZES,
          opset: int = DEFAULT_OPSET, force: bool = False, max_class_chunks: int = DEFAULT_MAX_CLASS_CHUNKS,
          log: Callable[[str], None] = print) -> dict:
    """Export (and with TensorRT, build) everything for `model` into `out`; returns the manifest."""
    batch_sizes = parse_batch_sizes(batch_sizes)
    if not isinstance(opset, int) or not 14 <= opset <= 23:
        raise InvalidInputError(f"--opset must be an integer from 14 to 23 (scaled dot product attention "
                                f"and dynamic shapes need >= 14), got {opset!r}")
    if isinstance(max_class_chunks, bool) or not isinstance(max_class_chunks, int) or max_class_chunks < 1:
        raise InvalidInputError(f"--max-class-chunks must be a positive integer, got {max_class_chunks!r}")
    if fp16 and onnx_only:
        raise InvalidInputError("--fp16 applies to TensorRT engines (the ONNX graphs are float32); "
                                "drop --fp16 or --onnx-only")
    trt = None
    if not onnx_only:
        from .backends.tensorrt import require_tensorrt

        trt = require_tensorrt()  # fail fast, before minutes of export
    from .model import check_model_dir

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
    base_key = {"model_sha256": fp["sha256"], "opset": opset,
                "versions": {k: versions[k] for k in ONNX_KEY_VERSIONS}}
    loaded = {}

    def modules():
        if not loaded:
            with stage(f"loading {model} in PyTorch (fp32, CPU)"):
                loaded["mods"], loaded["specs"], loaded["dims"] = graph_modules(model)
        return loaded["mods"], loaded["specs"], loaded["dims"]

    graphs = {}
    work = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out))
    try:
        for name in GRAPHS:
            file = f"{name}.onnx"
            key = dict(base_key, graph=name)
            graphs[name] = _reuse(out, file, key, force, log, f"onnx {name}")
            if graphs[name] is not None:
                continue
            invalidate()
            mods, specs, dims = modules()
            gdir = work / name
            gdir.mkdir()
            with stage(f"onnx {name}: export"):
                files = export_onnx(mods[name], specs[name], dims, gdir, opset)
            with stage(f"onnx {name}: check against PyTorch in ONNX Runtime"):
                check = check_onnx(mods[name], specs[name], dims, files[0])
            worst = max(check["max_abs_error"].items(), key=lambda kv: kv[1])
            log(f"[export] onnx {name}: max abs error {worst[1]:.2e} ({worst[0]})")
            stale = out / f"{file}.data"
            entry = {"file": file, "files": _install(files, out), "opset": opset, "dtype": "float32",
                     **spec_to_json(specs[name]), "check": check, "dims": _dims_json(dims)}
            if stale.exists() and stale.name not in entry["files"]:
                stale.unlink()
            atomic_write_json(_record_path(out, file), {"key": key, "entry": entry, "files": entry["files"]})
            graphs[name] = entry
        dims_json = graphs["unet_attn"]["dims"]
        engines = None
        if not onnx_only:
            from .backends.tensorrt import build_engines

            gpu = gpu_info()
            engines = build_engines(trt, out, work, graphs, dims_json, fp16=fp16, batch_sizes=batch_sizes,
                                    max_class_chunks=max_class_chunks, gpu=gpu, versions=versions,
                                    force=force, stage=stage, invalidate=invalidate, log=log)
        manifest = {
            "format": FORMAT,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "build_args": {"model": str(model), "onnx_only": onnx_only, "fp16": fp16,
                           "batch_sizes": list(batch_sizes), "opset": opset,
                           "max_class_chunks": max_class_chunks},
            "model": fp, "dims": dims_json, "versions": versions, "graphs": graphs, "engines": engines,
        }
        old = _read_json(manifest_path)
        if old is not None and _same_build(old, manifest):
            log(f"[export] manifest: up to date ({manifest_path})")
            manifest = old
        else:
            atomic_write_json(manifest_path, manifest)
            log(f"[export] manifest: wrote {manifest_path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"[export] all done in {time.perf_counter() - t_start:.1f} s")
    return manifest


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
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="diffusers SD 1.x directory or hub id")
    p.add_argument("--out", required=True, help="engines directory to write (manifest.json last)")
    p.add_argument("--onnx-only", action="store_true", help="stop after the checked ONNX graphs (no GPU needed)")
    p.add_argument("--fp16", action="store_true", help="TensorRT engines in fp16 (ONNX stays fp32)")
    p.add_argument("--batch-sizes", default="1,2,4,8", help="images per call the TensorRT profile covers")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--max-class-chunks", type=int, default=DEFAULT_MAX_CLASS_CHUNKS,
                   help="class-prompt chunks of 77 tokens per image the TensorRT profile covers")
    p.add_argument("--force", action="store_true", help="rebuild everything, even what is up to date")


def run_args(args) -> int:
    build(args.model, args.out, onnx_only=args.onnx_only, fp16=args.fp16, batch_sizes=args.batch_sizes,
          opset=args.opset, force=args.force, max_class_chunks=args.max_class_chunks,
          log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


def register(subparsers) -> None:
    """Mount `faseg-rt export` on the core CLI."""
    p = subparsers.add_parser("export", help="export ONNX graphs / TensorRT engines (export/build_engines.py)")
    add_arguments(p)
    p.set_defaults(func=run_args)


def main(argv=None) -> int:
    """`python export/build_engines.py ...`: the same as `faseg-rt export ...`."""
    from .cli import main as cli_main

    return cli_main(["export", *(sys.argv[1:] if argv is None else argv)])
