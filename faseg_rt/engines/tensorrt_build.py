"""TensorRT engine builds from the checked ONNX graphs (called by engines/build.py).

One engine per graph with the TensorRT Python API, one optimisation profile covering the requested
batch sizes (N = 2 x images: each image and its mirror; J class-prompt chunks; P = 1 + J prompts),
fp16 when asked, and one timing cache file (DIR/timing.cache) loaded before and saved after every
build, so later builds reuse the tactics.  `require_tensorrt` is shared with the TensorRT backend.
"""

from __future__ import annotations

from pathlib import Path

import torch

from faseg_rt.engines.cache import install, record_path, reuse
from faseg_rt.errors import BackendUnavailableError, EngineError
from faseg_rt.io import atomic_path, atomic_write_json

NO_CUDA = ("TensorRT needs a CUDA GPU and `pip install faseg_rt[gpu]` (tensorrt>=10); {why}. "
           "Here, export with --onnx-only and use backend='onnxruntime'")


TIMING_CACHE = "timing.cache"


def require_tensorrt():
    """The tensorrt module, or BackendUnavailableError saying why not (no CUDA GPU / not installed)."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError(NO_CUDA.format(why="no CUDA GPU is visible to torch on this machine"))
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(NO_CUDA.format(why="the tensorrt package is not installed")) from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise BackendUnavailableError(NO_CUDA.format(why=f"tensorrt {trt.__version__} is too old"))
    return trt


def trt_logger(trt):
    return trt.Logger(trt.Logger.WARNING)


def profile_shapes(spec_json: dict, batch_sizes, max_class_chunks: int) -> dict:
    """{input name: (min, opt, max) shape} for one graph, from its named dimensions.

    N (latents) = 2 x images in [min, max] batch size, opt at the largest; J in [1, max chunks],
    opt 1; P (prompts to the text encoder) = 1 + J.
    """
    lo, hi = min(batch_sizes), max(batch_sizes)
    ranges = {"N": (2 * lo, 2 * hi, 2 * hi), "J": (1, 1, max_class_chunks),
              "P": (1, 2, 1 + max_class_chunks)}
    out = {}
    for t in spec_json["inputs"]:
        shapes = [[ranges[d][i] if isinstance(d, str) else d for d in t["shape"]] for i in range(3)]
        out[t["name"]] = shapes
    return out


def build_engine(trt, onnx_path: Path, plan_path: Path, profile: dict, fp16: bool, cache_path: Path) -> None:
    """Parse the ONNX graph and write a serialized engine to plan_path (the caller renames it)."""
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {errs}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    prof = builder.create_optimization_profile()
    for name, (mn, opt, mx) in profile.items():
        prof.set_shape(name, mn, opt, mx)
    config.add_optimization_profile(prof)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path.name} (see the log above)")
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    plan_path.write_bytes(memoryview(plan))


def build_engines(trt, out: Path, work: Path, graphs: dict, dims_json: dict, *, fp16, batch_sizes,
                  max_class_chunks, gpu, versions, force, stage, invalidate, log) -> dict:
    """Build (or reuse, when up to date) one engine per graph; returns the manifest's engines entry."""
    precision = "fp16" if fp16 else "fp32"
    entries, profiles = {}, {}
    for name, g in graphs.items():
        file = f"{name}.plan"
        profile = profile_shapes(g, batch_sizes, max_class_chunks)
        profiles[name] = profile
        key = {"graph": name, "onnx_sha256": g["files"], "precision": precision, "profile": profile,
               "tensorrt": versions.get("tensorrt"), "gpu": gpu}
        entries[name] = reuse(out, file, key, force, log, f"tensorrt {name}")
        if entries[name] is not None:
            continue
        invalidate()
        tmp_plan = work / file
        with stage(f"tensorrt {name}: build ({precision})"):
            build_engine(trt, out / g["file"], tmp_plan, profile, fp16, out / TIMING_CACHE)
        entry = {"file": file, "files": install([tmp_plan], out), "inputs": g["inputs"],
                 "outputs": g["outputs"], "precision": precision}
        atomic_write_json(record_path(out, file), {"key": key, "entry": entry, "files": entry["files"]})
        entries[name] = entry
    return {"precision": precision, "gpu": gpu, "batch_sizes": list(batch_sizes),
            "max_class_chunks": max_class_chunks, "profiles": profiles, "timing_cache": TIMING_CACHE,
            "graphs": entries}
