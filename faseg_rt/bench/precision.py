"""Precision policy, measured: each stage's error against the float64 oracle, and mask agreement.

Every stage of a segmenter runs on the oracle's own input of that stage (cast to the stage's
dtype), so a row is that stage's error alone, not the sum of everything upstream:

    text_encoder  full-prompt embeddings E                  (oracle: E)
    vae_encoder   moments from the oracle's pixels           (oracle: moments)
    unet          eps of the inversion pass from z0, E       (oracle: eps)
    inversion     z1 from the oracle's z0 and eps            (oracle: z1)
    capture       cross_r / self_r / S_64 from the oracle's z1, E, E_cls (oracle: dense means)
    end_to_end    scores of a whole call                     (oracle: scores)

Errors are relative: max |x - x_oracle| / max |x_oracle|.  `faseg-rt bench precision` prints
them for fp32 and bf16 side by side, with the labels' agreement (fp32 vs bf16, each vs oracle).
"""

from __future__ import annotations

import numpy as np
import torch

from faseg_rt.method.inversion import invert
from faseg_rt.method.reference import reference_hard_ttf


def relative_error(x: torch.Tensor, oracle: torch.Tensor) -> float:
    x, oracle = x.detach().double().cpu(), oracle.detach().double().cpu()
    return float((x - oracle).abs().max() / oracle.abs().max().clamp_min(1e-30))


def oracle_run(ref, image, classes, caption=None, scores: bool = True) -> dict:
    """The oracle's intermediates, dense attention means and (with `scores`: HARD + TTF, the
    costly dense part) scores and labels for one image."""
    trace: dict = {}
    cross, selfs, spans = ref.attention(image, classes, caption, trace=trace)
    if scores:
        trace["scores"], trace["labels"] = reference_hard_ttf(cross, selfs, spans, 0.55, out_size=image.size)
    return dict(trace, cross=cross, selfs=selfs)


def network_stage_errors(seg, oracle: dict) -> dict[str, float]:
    """text_encoder / vae_encoder / unet / inversion / capture errors of `seg` (see module doc)."""
    be, prec = seg.backend, seg.backend.precision
    out = {}
    with torch.inference_mode():
        E, e_cls = oracle["E"], torch.cat(oracle["E_cls"])                 # (1, 77, D), (J, 77, D)
        e = be.text_encoder(input_ids=oracle["E_ids"])["last_hidden_state"]
        out["text_encoder"] = relative_error(e, E)
        moments = be.vae_encoder(pixels=oracle["pixels"].to(prec["vae_encoder"]))["moments"]
        out["vae_encoder"] = relative_error(moments, oracle["moments"])
        full = E.expand(2, -1, -1).to(prec["text_encoder"])
        ts = torch.tensor([seg.config.timestep])
        eps = be.unet(latents=oracle["z0"].to(prec["unet"]), timestep=ts, encoder_hidden_states=full)["eps"]
        out["unet"] = relative_error(eps, oracle["eps"])
        z1 = invert(oracle["z0"].float(), oracle["eps"].float(), seg.config)
        out["inversion"] = relative_error(z1, oracle["z1"])
        chunks = e_cls.unsqueeze(0).expand(2, -1, -1, -1).to(prec["text_encoder"])
        s = be.unet_attn(latents=oracle["z1"].to(prec["unet"]), timestep=ts, encoder_hidden_states=full,
                         class_hidden_states=chunks)
    out["capture_cross"] = max(relative_error(s[f"cross_{r}"], c) for r, c in oracle["cross"].items()
                               if seg.config.cross_weights.get(r, 0))
    s64 = torch.softmax(s["q_64"].double() @ s["k_64"].double().transpose(-1, -2), -1).mean(1)
    out["capture_self"] = max([relative_error(s[f"self_{r}"], oracle["selfs"][r]) for r in (8, 16, 32)]
                              + [relative_error(s64, oracle["selfs"][64])])
    return out


def call_errors(seg, oracle: dict, image, classes, caption=None):
    """(relative error of the scores, label agreement with the oracle, the result) of one call."""
    res = seg(image, classes=classes, caption=caption)
    err = float(np.abs(res.scores - oracle["scores"]).max() / np.abs(oracle["scores"]).max())
    return err, float((res.labels == oracle["labels"]).mean()), res
