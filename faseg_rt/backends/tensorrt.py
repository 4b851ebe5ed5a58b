"""TensorRT backend: runs the engines that engines/tensorrt_build.py built.

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

from faseg_rt.backends.base import ExportedBackend, check_latent_size
from faseg_rt.engines.graphs import graph_specs
from faseg_rt.engines.manifest import dims_from_json, rebuild_command, verify_manifest
from faseg_rt.engines.tensorrt_build import require_tensorrt, trt_logger
from faseg_rt.errors import EngineError, EngineMismatchError, InvalidInputError

# --------------------------------------------------------------------------- build


# --------------------------------------------------------------------------- run
class TRTEngine:
    """A deserialised engine run on torch CUDA tensors by I/O name (thread-safe via a lock)."""

    def __init__(self, trt, path: Path, device: torch.device):
        self.device = device
        self.path = path
        self._runtime = trt.Runtime(trt_logger(trt))
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
        from faseg_rt.config import FASegConfig

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


__all__ = ["TRTEngine", "TensorRTBackend"]
