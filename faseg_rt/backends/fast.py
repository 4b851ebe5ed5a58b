"""The torch fast path's switches: torch.compile (networks, and HARD / TTF) and CUDA graphs.

Both are off by default: which to turn on is decided by measurement on a GPU
(`faseg-rt bench gpu`, benchmarks/README.md).  fp16 with flash attention needs no switch: the
attention processor calls F.scaled_dot_product_attention, which takes the flash kernel for fp16
CUDA tensors of SD's head widths (the bench's env step checks that it runs).

    Segmenter.from_pretrained(model, compile=True)            # inductor
    Segmenter.from_pretrained(model, compile="aot_eager")     # dynamo capture only (cheap check)
    Segmenter.from_pretrained(model, device="cuda", cuda_graphs=True)

compile: every network module and the HARD / TTF functions go through torch.compile with
dynamic=False (one specialised graph per batch shape: the shapes a service sees are few).
cuda_graphs: each network call is replayed from a CUDA graph captured once per input signature
(shapes and dtypes), with static input buffers the call's tensors are copied into and outputs
cloned out; the network's kernel launches then cost one replay.  Captures need CUDA.
"""

from __future__ import annotations

import threading

import torch

from faseg_rt.errors import InvalidInputError

#: torch.compile backends accepted by `compile=` (True means inductor).
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def compile_backend(compile) -> str | None:
    """The torch.compile backend `compile` asks for, or None (off)."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return "inductor"
    if isinstance(compile, str) and compile in COMPILE_BACKENDS:
        return compile
    raise InvalidInputError(f"compile must be True, False or one of {', '.join(COMPILE_BACKENDS)}; got {compile!r}")


def check_cuda_graphs(cuda_graphs, device: torch.device) -> bool:
    if not isinstance(cuda_graphs, bool):
        raise InvalidInputError(f"cuda_graphs must be True or False, got {cuda_graphs!r}")
    if cuda_graphs and torch.device(device).type != "cuda":
        raise InvalidInputError(f"cuda_graphs=True needs device='cuda' (got {device}); drop cuda_graphs")
    return cuda_graphs


def compiled(fn, backend: str | None):
    """`fn` (a module or function) through torch.compile with `backend`, or `fn` when None."""
    if backend is None:
        return fn
    return torch.compile(fn, backend=backend, dynamic=False)


class CudaGraphRunner:
    """A runner (named tensors in, named tensors out) replayed from CUDA graphs.

    One graph per input signature, captured at its first call after two warm-up runs on a side
    stream (lazy initialisation, cuDNN autotuning and compilation stay outside the capture).
    Static buffers are shared by every call, so calls are serialised by a lock.
    """

    def __init__(self, runner, device: torch.device):
        self.runner = runner
        self.device = torch.device(device)
        self._graphs: dict = {}
        self._lock = threading.Lock()

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        key = tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(inputs.items()))
        with self._lock, torch.inference_mode():
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._graphs[key] = self._capture(inputs)
            graph, static_in, static_out = entry
            for k, v in inputs.items():
                static_in[k].copy_(v)
            graph.replay()
            return {k: v.clone() for k, v in static_out.items()}

    def _capture(self, inputs: dict):
        static_in = {k: v.detach().to(self.device).clone() for k, v in inputs.items()}
        caller = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(caller)
        with torch.cuda.stream(side):
            for _ in range(2):
                self.runner(**static_in)
        caller.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.runner(**static_in)
        return graph, static_in, static_out
