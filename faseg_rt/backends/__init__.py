"""Backends run the four networks; the method code only sees `Backend` and its runners.

Each runner is called with named tensors and returns a dict of named tensors, with the names of
`faseg_rt.engines.graphs.graph_specs`.  `load_backend(name, ...)` picks the implementation.
"""

from __future__ import annotations

from faseg_rt.backends.base import Backend, Runner

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def load_backend(name: str, model, *, device, dtype, engines=None, config=None, compile=None,
                 cuda_graphs: bool = False) -> Backend:
    """compile / cuda_graphs: the torch backend's fast-path switches (backends/fast.py)."""
    import torch

    from faseg_rt.errors import InvalidInputError

    if name == "torch":
        from faseg_rt.backends.torch import TorchBackend

        return TorchBackend.from_pretrained(model, device=device, dtype=dtype, config=config, compile=compile,
                                            cuda_graphs=cuda_graphs)
    if dtype == torch.bfloat16:
        raise InvalidInputError(f"bfloat16 runs on the torch backend only (the {name} graphs are exported in "
                                "float32 / float16): use backend='torch', or dtype float32 / float16")
    if compile or cuda_graphs:
        raise InvalidInputError(f"compile= and cuda_graphs= apply to the torch backend, not {name!r}")
    if name == "onnxruntime":
        from faseg_rt.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend.from_engines(model, engines, device=device, dtype=dtype, config=config)
    if name == "tensorrt":
        from faseg_rt.backends.tensorrt import TensorRTBackend

        return TensorRTBackend.from_engines(model, engines, device=device, dtype=dtype, config=config)
    raise InvalidInputError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["Backend", "Runner", "BACKENDS", "load_backend"]
