"""ONNX Runtime backend: the four exported graphs, run by onnxruntime sessions.

The graphs are traces of the graphs.py modules the torch backend runs, so the method code in
segmenter.py is unchanged: each runner takes and returns torch tensors by the graph_specs names.
The engines directory is checked first (engines.verify_manifest): another model, other library
versions, or a missing / changed file is refused with the rebuild command.

Execution providers: CPU here; on device="cuda" the CUDA provider (onnxruntime-gpu, the `onnx-gpu`
extra, never installed beside the CPU wheel), with IO binding so inputs and outputs stay in torch
CUDA memory, on the backend's own CUDA stream (`user_compute_stream`) that waits on the caller's
stream by event: no host synchronisation before a run.  A CUDA provider that fails to load makes
onnxruntime fall back to a CPU session without an error; the providers of every session are
checked after creation and such a fallback is refused.

dtype=torch.float32 runs the fp32 graphs; torch.float16 the fp16 graphs of an `--fp16` export
(attention capture in fp32 inside them; the text encoder stays fp32).  fp16 on the CPU works,
slowly: it is there for checks (faseg-rt validate), not for speed.
"""

from __future__ import annotations

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
from faseg_rt.engines.manifest import dims_from_json, graph_entries, spec_from_json, verify_manifest
from faseg_rt.errors import BackendUnavailableError, EngineError, InvalidInputError

_NP_TYPES = {"float32": "float32", "float16": "float16", "int64": "int64"}


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("the onnxruntime backend needs onnxruntime: "
                                      "pip install -e '.[onnx]' (or onnxruntime-gpu on a GPU machine)") from None
    return ort


class OrtRunner:
    """One ONNX Runtime session called with named torch tensors; returns named torch tensors."""

    def __init__(self, session, spec, device: torch.device, stream=None, run_options=None):
        self.session = session
        self.spec = spec
        self.device = device
        self.stream = stream  # the session's CUDA compute stream (torch.cuda.Stream) on cuda
        self.run_options = run_options  # CUDA: the arena policy (arena_policy)

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":
            return self._run_cuda(inputs)
        feed = {}
        for ts in self.spec.inputs:
            t = inputs[ts.name].detach()
            feed[ts.name] = t.to("cpu", getattr(torch, ts.dtype)).contiguous().numpy()
        outs = self.session.run(self.spec.output_names, feed)
        return {n: torch.from_numpy(o) for n, o in zip(self.spec.output_names, outs)}

    def _run_cuda(self, inputs):
        """IO binding on torch CUDA buffers: no host round trip (output shapes from the spec)."""
        import numpy as np

        sizes = {}
        binding = self.session.io_binding()
        keep = []
        idx = self.device.index or 0
        for ts in self.spec.inputs:
            t = inputs[ts.name].detach().to(self.device, getattr(torch, ts.dtype)).contiguous()
            keep.append(t)
            for d, n in zip(ts.shape, t.shape):
                if isinstance(d, str):
                    sizes[d] = n
            binding.bind_input(ts.name, "cuda", idx, np.dtype(_NP_TYPES[ts.dtype]), list(t.shape), t.data_ptr())
        out = {}
        for ts in self.spec.outputs:
            shape = [sizes[d] if isinstance(d, str) else d for d in ts.shape]
            o = torch.empty(shape, dtype=getattr(torch, ts.dtype), device=self.device)
            binding.bind_output(ts.name, "cuda", idx, np.dtype(_NP_TYPES[ts.dtype]), shape, o.data_ptr())
            out[ts.name] = o
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)  # inputs written before ORT reads them (an event, no host sync)
        self.session.run_with_iobinding(binding, self.run_options)  # returns once its stream is done
        caller.wait_stream(self.stream)
        return out


@dataclass
class OnnxRuntimeBackend(ExportedBackend):

    @classmethod
    def from_engines(cls, model, engines, *, device, dtype, config=None) -> "OnnxRuntimeBackend":
        from faseg_rt.config import FASegConfig

        ort = _import_ort()
        config = config or FASegConfig()
        device = torch.device(device)
        if dtype not in (torch.float32, torch.float16):
            raise InvalidInputError(f"the onnxruntime backend runs the fp32 or fp16 ONNX graphs; got dtype={dtype}")
        if device.type not in ("cpu", "cuda"):
            raise InvalidInputError(f"the onnxruntime backend runs on cpu or cuda, not {device}")
        manifest = verify_manifest(engines, model, "onnxruntime", device=device)
        dims = check_latent_size(dims_from_json(manifest["dims"]), config, engines)
        entries = graph_entries(manifest, "fp16" if dtype == torch.float16 else "fp32")
        stream = None
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "device='cuda' with the onnxruntime backend needs onnxruntime-gpu (CUDAExecutionProvider "
                    f"is not among {ort.get_available_providers()}); pip install -e '.[onnx-gpu]' (after "
                    "pip uninstall onnxruntime), or use device='cpu'")
            if hasattr(ort, "preload_dlls"):  # CUDA / cuDNN of the torch wheel, before a session needs them
                ort.preload_dlls()
            options = {"device_id": device.index or 0, **ARENA_OPTIONS}
            if torch.cuda.is_available():
                stream = torch.cuda.Stream(device)
                options["user_compute_stream"] = str(stream.cuda_stream)
            providers = [("CUDAExecutionProvider", options), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        runners = {}
        for name, entry in entries.items():
            spec = spec_from_json(name, entry)
            sess = _session(ort, Path(engines) / entry["file"], providers, device, model, engines)
            got = [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()]
            if got != (spec.input_names, spec.output_names):
                raise EngineError(f"{entry['file']} has inputs/outputs {got}, expected "
                                  f"{(spec.input_names, spec.output_names)}; rebuild it with --force")
            runners[name] = OrtRunner(sess, spec, device, stream, arena_policy(ort, device))
        limits = exported_limits(manifest, "onnxruntime")
        runners["unet_attn"] = ChunkGroups(runners["unet_attn"], limits.pop("max_chunks"))
        return cls(name="onnxruntime", device=device, dtype=dtype, dims=dims, engines=Path(engines),
                   manifest=manifest, skip_cross=exported_skip_cross(manifest), **limits, **runners)


#: CUDA arena policy: each session's arena grows by what a run asks for (not by powers of two)
#: and is shrunk back after every run (RunOptions), so the four sessions do not each keep their
#: peak activations for good; inputs and outputs live in torch memory (IO binding) anyway.  The
#: cost is a cudaMalloc per run for the activations, which `bench gpu`'s onnxruntime step times.
ARENA_OPTIONS = {"arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "HEURISTIC"}


def arena_policy(ort, device: torch.device):
    """RunOptions that shrink the CUDA arena after each run (None on the CPU)."""
    if device.type != "cuda":
        return None
    ro = ort.RunOptions()
    ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", f"gpu:{device.index or 0}")
    return ro


def _session(ort, path: Path, providers: list, device: torch.device, model, engines):
    """An InferenceSession on `providers`, refused when it silently fell back to the CPU.  Its
    CPU thread pool gets torch's intra-op threads (faseg_rt/threads.py's policy): onnxruntime's
    default, one thread per physical core, ignores CPU affinity, quotas and Ray's CPUs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        sess = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph types
        raise EngineError(f"onnxruntime cannot load {path} ({type(e).__name__}: {e}); rebuild with "
                          f"python export/build_engines.py --model {model} --out {engines} "
                          "--onnx-only --force") from None
    got = sess.get_providers()
    if device.type == "cuda" and (not got or got[0] != "CUDAExecutionProvider"):
        raise BackendUnavailableError(
            f"onnxruntime created the {path.name} session on {got}, not on CUDA: the CUDA provider failed to "
            "load (CUDA / cuDNN libraries that do not match onnxruntime-gpu; see its log above); fix the "
            "install or use device='cpu'")
    return sess
