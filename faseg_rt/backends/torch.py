"""PyTorch backend: the diffusers / transformers modules, run through the graph wrappers.

compile= and cuda_graphs= switch on the fast path of backends/fast.py (both off by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from faseg_rt.backends.base import Backend
from faseg_rt.backends.fast import CudaGraphs, check_cuda_graphs, compile_backend, compiled
from faseg_rt.engines.graphs import (
    GraphSpec,
    TextEncoderGraph,
    UNetAttnGraph,
    UNetGraph,
    VaeEncoderGraph,
    graph_specs,
)
from faseg_rt.method.attention import install_processors
from faseg_rt.model import load_modules, model_dims
from faseg_rt.precision import PrecisionPolicy, apply_policy, precision_policy


class TorchRunner:
    """Calls a graph module with inputs in spec order and names its outputs."""

    def __init__(self, module: nn.Module, spec: GraphSpec):
        self.module = module
        self.spec = spec

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = self.module(*(inputs[n] for n in self.spec.input_names))
        if isinstance(out, torch.Tensor):
            out = (out,)
        return dict(zip(self.spec.output_names, out))


def skip_cross_for(config) -> tuple[int, ...]:
    """Resolutions whose class-aware maps `config` weighs by 0: the torch backend skips them."""
    return tuple(r for r, w in config.cross_weights.items() if w == 0)


@dataclass
class TorchBackend(Backend):
    modules: tuple = ()
    config: object = None
    compile: str | None = None
    cuda_graphs: bool = False

    @classmethod
    def from_pretrained(cls, model, *, device, dtype, config=None, compile=None,
                        cuda_graphs: bool = False) -> "TorchBackend":
        # loaded in float32 and cast by the precision policy, which keeps some stages in float32
        vae, text_encoder, unet = load_modules(model, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        return cls.from_modules(vae, text_encoder, unet, device=device, dtype=dtype, config=config,
                                compile=compile, cuda_graphs=cuda_graphs)

    @classmethod
    def from_modules(cls, vae, text_encoder, unet, *, device, dtype, config=None, compile=None,
                     cuda_graphs: bool = False, precision: PrecisionPolicy | None = None) -> "TorchBackend":
        """precision: the policy to apply (None: faseg_rt.precision's for dtype on device)."""
        from faseg_rt.config import FASegConfig

        config = config or FASegConfig()
        skip_cross = skip_cross_for(config)
        device = torch.device(device)
        backend = compile_backend(compile)
        cuda_graphs = check_cuda_graphs(cuda_graphs, device)
        precision = precision or precision_policy(dtype, device)
        install_processors(unet, precision.attention)
        apply_policy(precision, vae, text_encoder, unet, device)
        dims = model_dims(vae, text_encoder, unet, latent_size=config.latent_size)
        specs = graph_specs(dims, dtype=str(precision.dtype).removeprefix("torch."))
        graphs = {"vae_encoder": VaeEncoderGraph(vae), "text_encoder": TextEncoderGraph(text_encoder),
                  "unet": UNetGraph(unet),
                  "unet_attn": UNetAttnGraph(unet, dims.resolutions, skip_cross, precision["capture"])}
        runners = {}
        shared = CudaGraphs(device) if cuda_graphs else None  # one stream, lock and pool for all four
        for name, module in graphs.items():
            runner = TorchRunner(compiled(module, backend), specs[name])
            runners[name] = shared.runner(name, runner) if shared else runner
        return cls(name="torch", device=device, dtype=precision.dtype, dims=dims, modules=(vae, text_encoder, unet),
                   config=config, compile=backend, cuda_graphs=cuda_graphs, skip_cross=skip_cross,
                   precision=precision, **runners)

    def for_config(self, config) -> "TorchBackend":
        """This backend if it was built for `config`'s latent size and zero cross weights, else a
        sibling on the same modules (no weights copied) that computes exactly what `config` reads."""
        if (self.dims.latent_size == config.latent_size and
                set(self.skip_cross) == set(skip_cross_for(config))):
            return self
        vae, text_encoder, unet = self.modules
        return TorchBackend.from_modules(vae, text_encoder, unet, device=self.device, dtype=self.dtype,
                                         config=config, compile=self.compile, cuda_graphs=self.cuda_graphs,
                                         precision=self.precision)

    def to(self, device, dtype=None) -> "TorchBackend":
        dtype = dtype or self.dtype
        vae, text_encoder, unet = self.modules
        cuda_graphs = self.cuda_graphs and torch.device(device).type == "cuda"
        return TorchBackend.from_modules(vae, text_encoder, unet, device=device, dtype=dtype, config=self.config,
                                         compile=self.compile, cuda_graphs=cuda_graphs)
