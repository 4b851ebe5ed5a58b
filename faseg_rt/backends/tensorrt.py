"""TensorRT: engine builds from the checked ONNX graphs, and the backend that runs them.

Build (called by faseg_rt.export): one engine per graph with the TensorRT 10 Python API, one
optimisation profile covering the requested batch sizes (N = 2 x images: each image and its
mirror; J class-prompt chunks; P = 1 + J prompts), fp16 when asked, and one timing cache file
(DIR/timing.cache) loaded before and saved after every build, so later builds reuse the tactics.

Run: `TRTEngine` deserialises a plan, and for each call sets the input shapes, points the
context at torch CUDA tensors (inputs as given, outputs freshly allocated) and enqueues
execute_async_v3 on the current torch stream: no host round trip between stages.

Without a CUDA GPU or the tensorrt package, `require_tensorrt` fails at once with what to do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..engines import dims_from_json, rebuild_command, verify_manifest
from ..errors import BackendUnavailableError, EngineError, EngineMismatchError, InvalidInputError
from ..graphs import graph_specs
from ..io import atomic_path, atomic_write_json
from .base import ExportedBackend, check_latent_size

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


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


# --------------------------------------------------------------------------- build
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
    logger = _logger(trt)
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
    from ..export import _install, _record_path, _reuse

    precision = "fp16" if fp16 else "fp32"
    entries, profiles = {}, {}
    for name, g in graphs.items():
        file = f"{name}.plan"
        profile = profile_shapes(g, batch_sizes, max_class_chunks)
        profiles[name] = profile
        key = {"graph": name, "onnx_sha256": g["files"], "precision": precision, "profile": profile,
               "tensorrt": versions.get("tensorrt"), "gpu": gpu}
        entries[name] = _reuse(out, file, key, force, log, f"tensorrt {name}")
        if entries[name] is not None:
            continue
        invalidate()
        tmp_plan = work / file
        with stage(f"tensorrt {name}: build ({precision})"):
            build_engine(trt, out / g["file"], tmp_plan, profile, fp16, out / TIMING_CACHE)
        entry = {"file": file, "files": _install([tmp_plan], out), "inputs": g["inputs"],
                 "outputs": g["outputs"], "precision": precision}
        atomic_write_json(_record_path(out, file), {"key": key, "entry": entry, "files": entry["files"]})
        entries[name] = entry
    return {"precision": precision, "gpu": gpu, "batch_sizes": list(batch_sizes),
            "max_class_chunks": max_class_chunks, "profiles": profiles, "timing_cache": TIMING_CACHE,
            "graphs": entries}


# --------------------------------------------------------------------------- run
class TRTEngine:
    """A deserialised engine run on torch CUDA tensors by I/O name (thread-safe via a lock)."""

    def __init__(self, trt, path: Path, device: torch.device):
        self.device = device
        self.path = path
        self._runtime = trt.Runtime(_logger(trt))
        with torch.cuda.device(device):
            self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(f"{path} is not a TensorRT engine this TensorRT / GPU can load")
        self.context = self.engine.create_execution_context()
        dt = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
              trt.int64: torch.int64, trt.bool: torch.bool}
        self.inputs, self.outputs, self.dtypes = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.dtypes[name] = dt[self.engine.get_tensor_dtype(name)]
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        self._lock = threading.Lock()

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        with self._lock, torch.cuda.device(self.device):
            keep, out = [], {}
            for name in self.inputs:
                t = inputs[name].to(self.device, self.dtypes[name]).contiguous()
                keep.append(t)
                if not self.context.set_input_shape(name, tuple(t.shape)):
                    raise InvalidInputError(
                        f"{name} of shape {tuple(t.shape)} is outside the profile of {self.path.name} "
                        f"(batch too large or too many class-prompt chunks); rebuild with larger "
                        "--batch-sizes / --max-class-chunks, or call with a smaller batch_size")
                self.context.set_tensor_address(name, t.data_ptr())
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                o = torch.empty(shape, dtype=self.dtypes[name], device=self.device)
                self.context.set_tensor_address(name, o.data_ptr())
                out[name] = o
            stream = torch.cuda.current_stream(self.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise EngineError(f"TensorRT failed to run {self.path.name}")
            # `keep` may be freed now: the caching allocator reuses memory in stream order.
            return out


@dataclass
class TensorRTBackend(ExportedBackend):

    @classmethod
    def from_engines(cls, model, engines, *, device, dtype, config=None) -> "TensorRTBackend":
        from ..config import FASegConfig

        trt = require_tensorrt()
        config = config or FASegConfig()
        device = torch.device(device)
        if device.type != "cuda":
            raise InvalidInputError(f"the tensorrt backend runs on a CUDA device, not {device}")
        manifest = verify_manifest(engines, model, "tensorrt", device=device)
        eng = manifest["engines"]
        want = "fp16" if dtype == torch.float16 else "fp32" if dtype == torch.float32 else None
        if want != eng["precision"]:
            args = manifest["build_args"]
            cmd = rebuild_command(model, engines, onnx_only=False, fp16=dtype == torch.float16,
                                  batch_sizes=args.get("batch_sizes"), force=True)
            raise EngineMismatchError(f"the engines in {engines} are {eng['precision']}, dtype={dtype} asks for "
                                      f"{want or 'an unsupported precision'}; pass the matching dtype or "
                                      f"rebuild with:\n  {cmd}")
        dims = check_latent_size(dims_from_json(manifest["dims"]), config, engines)
        specs = graph_specs(dims, "float32")
        runners = {name: TRTEngine(trt, Path(engines) / eng["graphs"][name]["file"], device) for name in specs}
        return cls(name="tensorrt", device=device, dtype=dtype, dims=dims, engines=Path(engines),
                   manifest=manifest, **runners)


__all__ = ["require_tensorrt", "build_engines", "TRTEngine", "TensorRTBackend"]
