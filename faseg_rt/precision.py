"""Precision policy: the float type of every stage, from the one dtype a caller names.

This module is the only place a stage's dtype is decided; the code of each stage reads its row
from the policy its backend resolved (`Backend.precision`, also `Segmenter.precision`).
A caller asks for float32 (exact, the default), float16 (CUDA) or bfloat16 (a CPU with bf16
instructions, AMX or AVX-512 BF16, or a CUDA GPU that supports it).  A reduced dtype is not a
cast of everything: FA-Seg reads softmax outputs and min-max normalises them, so the policy
lowers only the stages that carry the cost and whose error does not move the labels beyond
near-ties (the figures, with their dates and commands: benchmarks/README.md, "Precision policy"):

| stage        | what                                                | fp32 | bf16 | fp16 | read by                |
|--------------|-----------------------------------------------------|------|------|------|------------------------|
| text_encoder | CLIP text model (cheap; cached per vocabulary)      | fp32 | fp32 | fp32 | apply_policy, export   |
| vae_encoder  | convolutions, norms of the VAE encoder              | fp32 | bf16 | fp16 | apply_policy, export   |
| unet         | convolutions, norms, linears of both UNet passes    | fp32 | bf16 | fp16 | apply_policy, export   |
| capture      | softmax of the captured logits, head / layer means  | fp32 | fp32 | fp32 | AttentionCapture       |
| inversion    | latent sample and the DDIM inversion step           | fp32 | fp32 | fp32 | Segmenter              |
| hard         | cross fusion, class maps, HARD                      | fp32 | fp32 | fp32 | Segmenter              |
| ttf          | TTF, threshold, labels                              | fp32 | fp32 | fp32 | Segmenter              |
| captioner    | BLIP (frontend.captioner)                           | fp32 | fp32 | fp16 | FrontEnd               |
| recognizer   | SigLIP / SigLIP 2 / CLIP (frontend.recognizer)      | fp32 | fp32 | fp16 | FrontEnd               |

float64 (checks only) runs the networks (the captioner and recogniser too) in float64 and the
method stages (capture to ttf) in float32.

The captioner and recogniser stay float32 under bf16: a caption is a sequence of greedy choices
and becomes the UNet prompt, and a recogniser score decides whether a class is segmented at all,
so a bf16 rounding that changes one token or crosses the threshold changes the whole mask; on
the tiny models bf16 changes captions and candidate lists far more often than fp16 does
(benchmarks/README.md, "Precision policy", `faseg-rt bench precision --frontend`).  A Captioner or
Recognizer the caller loads and passes in runs as loaded: the policy casts only the ones the
front end loads itself.

On a CPU with AVX-512 BF16 but no AMX, the UNet's attention kernel itself (flash attention over
the 4096 tokens of latent 64, bound by its softmax, not its products) runs in float32 inside the
bf16 UNet: AVX-512 BF16 has vector instructions but no matrix unit, so bf16 does not make that
kernel faster, and float32 there keeps the labels closer to fp32's (`faseg-rt bench ops`,
`faseg-rt bench precision`).  With AMX (matrix tiles) it stays bf16.

The captured logits come from the UNet's own (reduced) q / k projections, left in the UNet's
dtype: the hidden states they project already carry the bf16 error, so float32 projections
would cost time for little agreement.  The fp16 rows are what the exported fp16 graphs and
TensorRT engines do: engines/build.py exports in fp16 the graphs whose network row says fp16,
and the capture inside them in the capture row's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from faseg_rt import devices

_F32, _F16, _BF16, _F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64


def _row(f32, bf16, f16, f64) -> dict[torch.dtype, torch.dtype]:
    return {_F32: f32, _BF16: bf16, _F16: f16, _F64: f64}


#: stage -> {the dtype a caller names: the stage's dtype}: the table above.
TABLE: dict[str, dict[torch.dtype, torch.dtype]] = {
    "text_encoder": _row(_F32, _F32, _F32, _F64),
    "vae_encoder": _row(_F32, _BF16, _F16, _F64),
    "unet": _row(_F32, _BF16, _F16, _F64),
    "capture": _row(_F32, _F32, _F32, _F32),
    "inversion": _row(_F32, _F32, _F32, _F32),
    "hard": _row(_F32, _F32, _F32, _F32),
    "ttf": _row(_F32, _F32, _F32, _F32),
    "captioner": _row(_F32, _F32, _F16, _F64),
    "recognizer": _row(_F32, _F32, _F16, _F64),
}
STAGES = tuple(TABLE)
#: the networks of the segmenter, cast by apply_policy (and exported by engines/build.py)
NETWORKS = ("text_encoder", "vae_encoder", "unet")


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


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
        return _name(self.dtype)

    def names(self) -> dict[str, str]:
        """Each stage's dtype name, and the UNet's attention kernel's where it differs from the
        UNet's: the policy as applied, for logs, sidecars and /healthz."""
        out = {s: _name(d) for s, d in self.stages}
        if self.attention is not None and self.attention != self["unet"]:
            out["unet attention kernel"] = _name(self.attention)
        return out

    def with_stage(self, stage: str, dtype: torch.dtype) -> "PrecisionPolicy":
        """This policy with one stage's dtype replaced (a what-if for tests and benchmarks)."""
        if stage not in dict(self.stages):
            raise KeyError(f"no stage {stage!r}; the stages are {', '.join(STAGES)}")
        return replace(self, stages=tuple((s, dtype if s == stage else d) for s, d in self.stages))


def stage_dtype(stage: str, dtype: torch.dtype) -> torch.dtype:
    """The table's dtype of `stage` when a caller names `dtype` (no device-dependent part)."""
    return TABLE[stage][dtype]


def precision_policy(dtype: torch.dtype, device: torch.device | str = "cpu") -> PrecisionPolicy:
    """The policy for a caller's dtype (already validated by faseg_rt.devices) on `device`.

    A backend resolves it once, when it is made (Backend.precision)."""
    stages = tuple((s, TABLE[s][dtype]) for s in STAGES)
    # channels-last convolutions for bf16 on the CPU (oneDNN's fastest bf16 layout); GPU kernels
    # pick their own
    cpu_bf16 = torch.device(device).type == "cpu" and dtype == _BF16
    # float32 attention where the CPU has no bf16 matrix unit: no slower there, and closer to
    # fp32's labels (module doc)
    attention = _F32 if cpu_bf16 and devices.cpu_bf16_instructions() != "amx_bf16" else None
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
