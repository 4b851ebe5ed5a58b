"""PyTorch backend: the diffusers / transformers modules, run through the graph wrappers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from faseg_rt.backends.base import Backend
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


@dataclass
class TorchBackend(Backend):
    modules: tuple = ()

    @classmethod
    def from_pretrained(cls, model, *, device, dtype, config=None) -> "TorchBackend":
        vae, text_encoder, unet = load_modules(model, dtype=dtype)
        return cls.from_modules(vae, text_encoder, unet, device=device, dtype=dtype, config=config)

    @classmethod
    def from_modules(cls, vae, text_encoder, unet, *, device, dtype, config=None,
                     skip_cross: tuple[int, ...] | None = None) -> "TorchBackend":
        from faseg_rt.config import FASegConfig

        config = config or FASegConfig()
        if skip_cross is None:  # class-aware maps the method weighs by 0 are not computed
            skip_cross = tuple(r for r, w in config.cross_weights.items() if w == 0)
        install_processors(unet)
        device = torch.device(device)
        for m in (vae, text_encoder, unet):
            if m.dtype != dtype:  # loaded in `dtype` already unless moved later (diffusers warns on casts)
                m.to(dtype=dtype)
            m.to(device=device)
        dims = model_dims(vae, text_encoder, unet, latent_size=config.latent_size)
        specs = graph_specs(dims, dtype=str(dtype).removeprefix("torch."))
        return cls(
            name="torch", device=device, dtype=dtype, dims=dims,
            vae_encoder=TorchRunner(VaeEncoderGraph(vae), specs["vae_encoder"]),
            text_encoder=TorchRunner(TextEncoderGraph(text_encoder), specs["text_encoder"]),
            unet=TorchRunner(UNetGraph(unet), specs["unet"]),
            unet_attn=TorchRunner(UNetAttnGraph(unet, dims.resolutions, skip_cross), specs["unet_attn"]),
            modules=(vae, text_encoder, unet))

    def to(self, device, dtype=None) -> "TorchBackend":
        dtype = dtype or self.dtype
        vae, text_encoder, unet = self.modules
        return TorchBackend.from_modules(vae, text_encoder, unet, device=device, dtype=dtype,
                                         skip_cross=self.unet_attn.module.skip_cross)
