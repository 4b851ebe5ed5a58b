"""Precision policy: the float type of every stage of the method, from the one dtype a caller names.

A caller asks for float32 (exact, the default), float16 (CUDA) or bfloat16 (a CPU with bf16
instructions, AMX tiles or AVX-512 BF16, or a CUDA GPU that supports it).  A reduced dtype is not
a cast of everything: FA-Seg reads softmax outputs and min-max normalises them, so the policy
lowers only the stages that carry the cost and whose error does not move the labels beyond
near-ties (the figures, with their dates and commands: benchmarks/README.md, "Precision policy"):

| stage          | what                                              | fp32 | bf16 | fp16 |
|----------------|---------------------------------------------------|------|------|------|
| text_encoder   | CLIP text model (cheap; cached per vocabulary)    | fp32 | fp32 | fp32 |
| vae_encoder    | convolutions, norms of the VAE encoder            | fp32 | bf16 | fp16 |
| unet           | convolutions, norms, linears of both UNet passes  | fp32 | bf16 | fp16 |
| capture        | softmax of the captured logits, head/layer means  | fp32 | fp32 | fp32 |
| inversion      | latent sample and the DDIM inversion step         | fp32 | fp32 | fp32 |
| refine         | cross fusion, HARD, TTF, labels                   | fp32 | fp32 | fp32 |

On a CPU with AVX-512 BF16 but no AMX, the UNet's attention kernel itself (flash attention over
the 4096 tokens of latent 64, bound by its softmax, not its products) runs in float32 inside the
bf16 UNet: without matrix tiles bf16 does not make that kernel faster, and float32 there keeps
the labels closer to fp32's (`faseg-rt bench ops`, `faseg-rt bench precision`).  With AMX it
stays bf16.

The captured logits come from the UNet's own (reduced) q / k projections, left in the UNet's
dtype: the hidden states they project already carry the bf16 error, so float32 projections
would cost time for little agreement.  The fp16 rows are what the exported fp16 graphs and
TensorRT engines do (engines/build.py): the torch fp16 path follows the same table.  float64
(checks only) runs the networks in float64 and the last three rows in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Stages in the order a call runs them (see the table above).
STAGES = ("text_encoder", "vae_encoder", "unet", "capture", "inversion", "refine")

_F32, _F16, _BF16 = torch.float32, torch.float16, torch.bfloat16


@dataclass(frozen=True)
class PrecisionPolicy:
    """dtype: what the caller asked for; stages: the dtype of each stage in STAGES."""

    dtype: torch.dtype
    stages: tuple[tuple[str, torch.dtype], ...]
    channels_last: bool = False
    #: dtype of the UNet's attention kernel (softmax(q k^T) v); None: the unet stage's dtype
    attention: torch.dtype | None = None

    def __getitem__(self, stage: str) -> torch.dtype:
        return dict(self.stages)[stage]

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def names(self) -> dict[str, str]:
        """Each stage's dtype name, and the UNet's attention kernel's where it differs from the UNet."""
        out = {s: str(d).removeprefix("torch.") for s, d in self.stages}
        if self.attention is not None and self.attention != self["unet"]:
            out["unet attention kernel"] = str(self.attention).removeprefix("torch.")
        return out


def precision_policy(dtype: torch.dtype, device: torch.device | str = "cpu") -> PrecisionPolicy:
    """The policy for a caller's dtype (already validated by faseg_rt.devices)."""
    text = _F32 if dtype in (_BF16, _F16) else dtype
    stages = (("text_encoder", text), ("vae_encoder", dtype), ("unet", dtype),
              ("capture", _F32), ("inversion", _F32), ("refine", _F32))
    # channels-last convolutions for bf16 on the CPU (oneDNN's fastest bf16 layout); GPU kernels
    # pick their own
    cpu_bf16 = torch.device(device).type == "cpu" and dtype == _BF16
    # float32 attention where bf16 has no matrix tiles: no slower there, and closer to fp32's
    # labels (module doc)
    attention = _F32 if cpu_bf16 and cpu_bf16_units() != "amx_bf16" else None
    return PrecisionPolicy(dtype, stages, channels_last=cpu_bf16, attention=attention)


def apply_policy(policy: PrecisionPolicy, vae, text_encoder, unet, device) -> None:
    """Cast (and place) the three networks as `policy` says, in place."""
    for module, stage in ((vae, "vae_encoder"), (text_encoder, "text_encoder"), (unet, "unet")):
        # nn.Module.to: diffusers' override warns on every cast, also of models with nothing to
        # keep in float32
        torch.nn.Module.to(module, device=device, dtype=policy[stage])
    memory_format = torch.channels_last if policy.channels_last else torch.contiguous_format
    for module in (vae, unet):
        module.to(memory_format=memory_format)


def cpu_bf16_units() -> str | None:
    """The CPU's bf16 support as cpuinfo names it: 'amx_bf16' (matrix tiles), 'avx512_bf16'
    (vector instructions), or None."""
    caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
    for flag in ("amx_bf16", "avx512_bf16"):
        if caps.get(flag):
            return flag
    return None
