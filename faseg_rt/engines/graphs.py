"""The four network stages as plain nn.Modules with named inputs and outputs, and their specs.

One definition serves the torch backend (which runs these modules), ONNX export (which traces
them) and engine builds / buffer allocation (which read the specs).  Forward methods have no
Python branching on data, so tracing sees the same graph the torch backend runs.

Dimension names in specs: "N" = number of latents (2 x images: each image and its mirror),
"P" = number of prompts, "J" = number of class-prompt chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from faseg_rt.method.attention import AttentionCapture
from faseg_rt.model import ModelDims
from faseg_rt.precision import stage_dtype


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints and dimension names
    dtype: str    # "float32", "float16" (model dtype) or "int64"


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def graph_specs(dims: ModelDims, dtype: str = "float32") -> dict[str, GraphSpec]:
    """Input/output names, shapes and dtypes of each graph (dtype = the model's float dtype; the
    attention summaries in the precision policy's capture dtype for it)."""
    s, c, T, D = dims.latent_size, dims.latent_channels, dims.text_len, dims.text_dim
    cap = str(stage_dtype("capture", getattr(torch, dtype))).removeprefix("torch.")
    attn_out = [TensorSpec(f"cross_{r}", ("N", "J", r * r, T), cap) for r in dims.resolutions]
    attn_out += [TensorSpec(f"self_{r}", ("N", r * r, r * r), cap) for r in dims.resolutions[:-1]]
    attn_out += [TensorSpec(f"{x}_{s}", ("N", dims.full_res_heads, s * s, dims.full_res_head_dim),
                            cap) for x in ("q", "k")]
    unet_in = (TensorSpec("latents", ("N", c, s, s), dtype), TensorSpec("timestep", (1,), "int64"),
               TensorSpec("encoder_hidden_states", ("N", T, D), dtype))
    return {
        "vae_encoder": GraphSpec(
            "vae_encoder", (TensorSpec("pixels", ("N", 3, dims.image_size, dims.image_size), dtype),),
            (TensorSpec("moments", ("N", 2 * c, s, s), dtype),)),
        "text_encoder": GraphSpec(
            "text_encoder", (TensorSpec("input_ids", ("P", T), "int64"),),
            (TensorSpec("last_hidden_state", ("P", T, D), dtype),)),
        "unet": GraphSpec("unet", unet_in, (TensorSpec("eps", ("N", c, s, s), dtype),)),
        "unet_attn": GraphSpec(
            "unet_attn", unet_in + (TensorSpec("class_hidden_states", ("N", "J", T, D), dtype),),
            tuple(attn_out)),
    }


class VaeEncoderGraph(nn.Module):
    """pixels (N, 3, 512, 512) in [-1, 1] -> moments (N, 8, 64, 64): mean and log-variance."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, pixels):
        return self.vae.encode(pixels).latent_dist.parameters


class TextEncoderGraph(nn.Module):
    """input_ids (P, 77) -> last_hidden_state (P, 77, D) of the CLIP text model."""

    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids):
        return self.text_encoder(input_ids, return_dict=False)[0]


class UNetGraph(nn.Module):
    """(latents (N, 4, 64, 64), timestep (1,), encoder_hidden_states (N, 77, D)) -> eps."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, latents, timestep, encoder_hidden_states):
        return self.unet(latents, timestep, encoder_hidden_states, return_dict=False)[0]


class UNetAttnGraph(nn.Module):
    """The reconstruction pass: the UNet's attention summaries for HARD (see attention.py).

    Returns the tensors named by graph_specs(...)["unet_attn"].outputs, in that order.  The
    UNet's own output is not used by the method, so it is not returned.  skip_cross: latent
    resolutions whose class-aware maps the method weighs by 0 (the torch backend passes them
    from its config, exports from --skip-cross, recorded in the manifest): returned as stride-0
    zeros, so a large vocabulary does not pay J x 4096 x 77 values per latent for maps nobody
    reads (an exported graph still writes the zeros of its output).  capture_dtype: the
    dtype the capture computes and returns its summaries in (the policy's capture row).
    """

    def __init__(self, unet, resolutions: tuple[int, ...], skip_cross: tuple[int, ...],
                 capture_dtype: torch.dtype):
        super().__init__()
        self.unet = unet
        self.resolutions = tuple(resolutions)
        self.skip_cross = tuple(skip_cross)
        self.capture_dtype = capture_dtype  # the precision policy's capture row

    def forward(self, latents, timestep, encoder_hidden_states, class_hidden_states):
        capture = AttentionCapture(class_hidden_states, self.resolutions, self.skip_cross, self.capture_dtype)
        self.unet(latents, timestep, encoder_hidden_states,
                  cross_attention_kwargs={"capture": capture}, return_dict=False)
        out = capture.summaries()
        return tuple(out[k] for k in self.output_names())

    def output_names(self) -> list[str]:
        rs, full = self.resolutions, max(self.resolutions)
        return ([f"cross_{r}" for r in rs] + [f"self_{r}" for r in rs if r != full]
                + [f"q_{full}", f"k_{full}"])
