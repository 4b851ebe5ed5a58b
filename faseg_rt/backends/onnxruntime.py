"""ONNX Runtime backend: the four exported graphs, run by onnxruntime sessions.

The graphs are traces of the graphs.py modules the torch backend runs, so the method code in
segmenter.py is unchanged: each runner takes and returns torch tensors by the graph_specs names.
The engines directory is checked first (engines.verify_manifest): another model, other library
versions, or a missing / changed file is refused with the rebuild command.

Execution providers: CPU here; on device="cuda" the CUDA provider (onnxruntime-gpu), with IO
binding so inputs and outputs stay in torch CUDA memory.  The graphs are float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from faseg_rt.backends.base import ExportedBackend, check_latent_size
from faseg_rt.engines.graphs import graph_specs
from faseg_rt.engines.manifest import dims_from_json, verify_manifest
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

    def __init__(self, session, spec, device: torch.device):
        self.session = session
        self.spec = spec
        self.device = device

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
        torch.cuda.current_stream(self.device).synchronize()  # inputs written before ORT reads them
        self.session.run_with_iobinding(binding)
        return out


@dataclass
class OnnxRuntimeBackend(ExportedBackend):

    @classmethod
    def from_engines(cls, model, engines, *, device, dtype, config=None) -> "OnnxRuntimeBackend":
        from faseg_rt.config import FASegConfig

        ort = _import_ort()
        config = config or FASegConfig()
        device = torch.device(device)
        if dtype != torch.float32:
            raise InvalidInputError(f"the onnxruntime backend runs the float32 ONNX graphs; got dtype={dtype}. "
                                    "Pass dtype=torch.float32 (or use backend='tensorrt' with --fp16 engines)")
        manifest = verify_manifest(engines, model, "onnxruntime", device=device)
        dims = check_latent_size(dims_from_json(manifest["dims"]), config, engines)
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "device='cuda' with the onnxruntime backend needs onnxruntime-gpu (CUDAExecutionProvider "
                    f"is not among {ort.get_available_providers()}); pip install onnxruntime-gpu, or use device='cpu'")
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        elif device.type == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            raise InvalidInputError(f"the onnxruntime backend runs on cpu or cuda, not {device}")
        specs = graph_specs(dims, "float32")
        runners = {}
        for name, spec in specs.items():
            path = Path(engines) / manifest["graphs"][name]["file"]
            try:
                sess = ort.InferenceSession(str(path), providers=providers)
            except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph types
                raise EngineError(f"onnxruntime cannot load {path} ({type(e).__name__}: {e}); rebuild with "
                                  f"python export/build_engines.py --model {model} --out {engines} "
                                  "--onnx-only --force") from None
            got = [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()]
            if got != (spec.input_names, spec.output_names):
                raise EngineError(f"{path} has inputs/outputs {got}, expected "
                                  f"{(spec.input_names, spec.output_names)}; rebuild it with --force")
            runners[name] = OrtRunner(sess, spec, device)
        return cls(name="onnxruntime", device=device, dtype=dtype, dims=dims, engines=Path(engines),
                   manifest=manifest, **runners)
