"""TensorRT backend: runs the engines that engines/tensorrt_build.py built (TensorRT 10.12-11.x).

Run path (hand-written, zero copy; docs/export.md, "TensorRT at run time"):
- one non-default CUDA stream per backend: the engine stream waits on the caller's current
  stream, enqueues, and the caller's stream then waits on it.  Never the legacy default stream,
  on which TensorRT adds a device-wide synchronisation per call;
- every engine of a backend enqueues on that one stream under one lock, so no two executions
  overlap on the GPU: one scratch buffer (the largest need of any engine and profile) is shared
  by all execution contexts (USER_MANAGED allocation), and two threads cannot overwrite each
  other's activations;
- two optimisation profiles per engine, latency (opt = 1 image) and throughput (opt = the
  largest batch), one execution context each; a call takes the profile whose opt batch is
  nearest its own;
- inputs are cast to the engine's own I/O dtypes (fp16 engines have fp16 I/O: no round trip),
  copied when their address is not 256-byte aligned, and kept for the engine stream
  (record_stream); every TensorRT status is checked.

Without a CUDA GPU or a supported tensorrt, `require_tensorrt` fails at once with what to do.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from faseg_rt.backends.base import (
    ChunkGroups,
    ExportedBackend,
    check_latent_size,
    exported_skip_cross,
    exported_limits,
)
from faseg_rt.backends.tensorrt_runtime import require_tensorrt, trt_logger
from faseg_rt.engines.graphs import graph_specs
from faseg_rt.engines.manifest import dims_from_json, rebuild_command, verify_manifest
from faseg_rt.errors import EngineError, EngineMismatchError, InvalidInputError

#: enqueueV3 / setTensorAddress need 256-byte aligned device pointers (NvInferRuntime.h).
ALIGNMENT = 256
#: Inputs whose dim 0 is the batch: the profile to use is chosen by their size.
BATCH_INPUTS = ("latents", "pixels", "input_ids")


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t` itself when its data pointer is 256-byte aligned, else an aligned copy."""
    return t if t.data_ptr() % ALIGNMENT == 0 else t.clone(memory_format=torch.contiguous_format)


def nearest_profile(opt_batches: list[int], n: int) -> int:
    """Index of the profile whose opt batch is nearest to n on a log scale (ties: the smaller)."""
    return min(range(len(opt_batches)), key=lambda i: (abs(math.log(opt_batches[i] / n)), opt_batches[i]))


class TRTEngine:
    """A deserialised engine run by I/O name on torch CUDA tensors (see the module doc)."""

    def __init__(self, trt, path: Path, device: torch.device, stream, lock, runtime):
        self.device, self.path, self.stream, self._lock = device, path, stream, lock
        self._runtime = runtime  # outlives the engine
        with torch.cuda.device(device):
            self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise EngineError(f"{path} is not a TensorRT engine this TensorRT / GPU can load")
        dt = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
              trt.int64: torch.int64, trt.bool: torch.bool}
        self.inputs, self.outputs, self.dtypes = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            self.dtypes[name] = dt[self.engine.get_tensor_dtype(name)]
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        # the input whose dim 0 is the batch (N latents, or P prompts), by name, not by position
        self.batch_input = next((n for n in BATCH_INPUTS if n in self.inputs), None)
        if self.batch_input is None:
            raise EngineError(f"{path.name} has none of the inputs {', '.join(BATCH_INPUTS)}; rebuild it with --force")
        profiles = range(self.engine.num_optimization_profiles)
        self.opt_batches = [int(self.engine.get_tensor_profile_shape(self.batch_input, p)[1][0]) for p in profiles]
        #: bytes of activation memory the largest profile needs
        self.scratch_need = max(self.engine.get_device_memory_size_for_profile_v2(p) for p in profiles)
        self.contexts: list = []
        self._trt = trt

    def create_contexts(self, scratch: torch.Tensor) -> None:
        """One context per profile, all on the backend's shared scratch buffer."""
        trt = self._trt
        for p in range(len(self.opt_batches)):
            ctx = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if ctx is None:
                raise EngineError(f"TensorRT cannot create an execution context for {self.path.name}")
            ctx.set_device_memory(scratch.data_ptr(), scratch.numel())
            if not ctx.set_optimization_profile_async(p, self.stream.cuda_stream):  # returns False on failure
                raise EngineError(f"TensorRT cannot switch {self.path.name}'s context to profile {p}")
            self.contexts.append(ctx)
        self._scratch = scratch  # kept alive as long as the contexts that point into it

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.contexts:
            raise EngineError(f"{self.path.name}: create_contexts was not called")
        caller = torch.cuda.current_stream(self.device)
        with self._lock, torch.cuda.device(self.device):
            p = nearest_profile(self.opt_batches, max(1, inputs[self.batch_input].shape[0]))
            ctx = self.contexts[p]
            keep, out = [], {}
            for name in self.inputs:
                t = aligned(inputs[name].to(self.device, self.dtypes[name]).contiguous())
                keep.append(t)
                if not ctx.set_input_shape(name, tuple(t.shape)):
                    raise InvalidInputError(
                        f"{name} of shape {tuple(t.shape)} is outside the profiles of {self.path.name} "
                        "(batch too large or too many class-prompt chunks); rebuild with larger "
                        "--batch-sizes / --max-class-chunks, or call with a smaller batch_size")
                self._address(ctx, name, t)
            unset = ctx.infer_shapes()
            if unset:
                raise EngineError(f"{self.path.name}: inputs without a shape: {', '.join(unset)}")
            for name in self.outputs:
                o = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=self.dtypes[name], device=self.device)
                self._address(ctx, name, o)
                out[name] = o
            self.stream.wait_stream(caller)        # inputs written, outputs' memory free
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise EngineError(f"TensorRT failed to run {self.path.name} (see the log above)")
            for t in keep:
                t.record_stream(self.stream)       # not reused by the caller's stream before we read it
            caller.wait_stream(self.stream)        # the caller sees finished outputs
            return out

    def _address(self, ctx, name: str, t: torch.Tensor) -> None:
        if not ctx.set_tensor_address(name, t.data_ptr()):
            raise EngineError(f"TensorRT rejected the address of {name} for {self.path.name}")


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
        if eng.get("tensorrt") != trt.__version__:  # the imported module's, whatever wheel brought it
            raise EngineMismatchError(f"the engines in {engines} were built by tensorrt {eng.get('tensorrt')}, "
                                      f"this is {trt.__version__}; rebuild with --force")
        dims = check_latent_size(dims_from_json(manifest["dims"]), config, engines)
        stream = torch.cuda.Stream(device)
        lock = threading.Lock()
        runtime = trt.Runtime(trt_logger())
        runners = {name: TRTEngine(trt, Path(engines) / eng["graphs"][name]["file"], device, stream, lock, runtime)
                   for name in graph_specs(dims)}
        with torch.cuda.stream(stream):  # the scratch block belongs to the engine stream, for good
            scratch = torch.empty(max(max(r.scratch_need for r in runners.values()), 1), dtype=torch.uint8,
                                  device=device)
        for r in runners.values():
            r.create_contexts(scratch)
        stream.synchronize()  # profile switches done before the first call
        limits = exported_limits(manifest, "tensorrt")
        runners["unet_attn"] = ChunkGroups(runners["unet_attn"], limits.pop("max_chunks"))
        return cls(name="tensorrt", device=device, dtype=dtype, dims=dims, engines=Path(engines),
                   manifest=manifest, skip_cross=exported_skip_cross(manifest), **limits, **runners)


__all__ = ["TRTEngine", "TensorRTBackend", "aligned", "nearest_profile"]
