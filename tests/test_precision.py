"""The precision policy (faseg_rt.precision) on the tiny random model.

Each stage is checked at the tolerance of the dtype the policy gives it, so a stage kept in
float32 that slips into bfloat16 fails (a bf16 rounding is 2^-9 relative; fp32 stages measure
~1e-6).  Tolerances, relative max error against float64 (measured headroom in brackets):
- a float32 stage: <= 1e-4 [networks ~1e-6, capture and inversion ~1e-7];
- a bfloat16 stage: <= 5e-2 [VAE ~1e-2, UNet ~1e-2];
- refine (cross fusion, HARD, TTF) of a bf16 segmenter equals the fp32 segmenter's on the same
  summaries to 1e-6 (it runs in float32; the fp32 path is checked against the oracle in
  test_segmenter_parity.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import PARITY_CASES
from faseg_rt.bench.precision import network_stage_errors, oracle_run, relative_error
from faseg_rt.images import preprocess
from faseg_rt.method.attention import AttentionCapture
from faseg_rt.precision import precision_policy
from faseg_rt.testing import synthetic_image

F32, BF16 = torch.float32, torch.bfloat16
BF16_AGREEMENT = 0.95
TOL = {F32: 1e-4, BF16: 5e-2}
BF16_POLICY = {"text_encoder": F32, "vae_encoder": BF16, "unet": BF16, "attention_qk": F32,
               "capture": F32, "inversion": F32, "refine": F32}


def test_bf16_policy_lowers_only_the_costly_stages():
    assert dict(precision_policy(BF16, "cpu").stages) == BF16_POLICY
    assert precision_policy(BF16, "cpu").channels_last
    assert {d for _, d in precision_policy(F32, "cpu").stages} == {F32}
    fp16 = precision_policy(torch.float16, "cuda")
    assert [fp16[s] for s in ("unet", "capture", "inversion", "refine")] == [torch.float16, F32, F32, F32]


def test_modules_follow_the_policy(small_bf16_segmenter):
    vae, text_encoder, unet = small_bf16_segmenter.backend.modules
    assert vae.encoder.conv_in.weight.dtype == BF16
    assert vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert text_encoder.dtype == F32
    attn = [m for m in unet.modules() if hasattr(m, "to_q") and hasattr(m, "set_processor")]
    assert attn and all(m.to_q.weight.dtype == m.to_k.weight.dtype == F32 for m in attn)
    assert all(m.to_v.weight.dtype == BF16 for m in attn)
    assert unet.conv_in.weight.dtype == BF16


def test_network_stages_match_the_oracle_at_the_policy_tolerance(segmenter, bf16_segmenter, reference64):
    seed, w, h, classes, caption = PARITY_CASES[0]
    oracle = oracle_run(reference64, synthetic_image(w, h, seed=seed), classes, caption, scores=False)
    # the capture rows come out of a whole UNet pass: they carry the UNet's precision
    stage_of = {"capture_cross": "unet", "capture_self": "unet"}
    for seg in (segmenter, bf16_segmenter):
        prec = seg.backend.precision
        for stage, err in network_stage_errors(seg, oracle).items():
            tol = TOL[prec[stage_of.get(stage, stage)]]
            assert err <= tol, f"{prec.name} {stage}: relative error {err:.2e} > {tol:.0e}"


def _attention_layers(unet):
    return [m for m in unet.modules() if hasattr(m, "to_q") and hasattr(m, "set_processor")]


def test_attention_logits_and_capture_run_in_float32(small_bf16_segmenter, monkeypatch):
    """In a bf16 UNet: to_q / to_k outputs equal float64 projections of their inputs, and the
    captured self maps equal a float64 softmax of those logits, at float32 tolerance."""
    seg = small_bf16_segmenter
    unet = seg.backend.modules[2]
    projections, selfs = [], []
    hooks = [lin.register_forward_hook(lambda mod, inp, out: projections.append((mod, inp[0], out)))
             for m in _attention_layers(unet) for lin in (m.to_q, m.to_k)]
    record_self = AttentionCapture.record_self

    def spy(capture, q, k, scale):
        selfs.append((q.shape[2], q.detach().clone(), k.detach().clone(), scale))
        return record_self(capture, q, k, scale)

    monkeypatch.setattr(AttentionCapture, "record_self", spy)
    try:
        text = seg.encode_text(["cat", "dog"])
        s = seg.attention_summaries(preprocess([synthetic_image(40, 30, seed=3)], 64), [text])
    finally:
        for hk in hooks:
            hk.remove()
    assert projections and selfs
    for mod, x, out in projections:
        assert out.dtype == F32
        ref = F.linear(x.double(), mod.weight.double(), None if mod.bias is None else mod.bias.double())
        assert relative_error(out, ref) <= TOL[F32]
    full = seg.config.latent_size
    for r in seg.config.resolutions:
        layers = [(q, k, sc) for n, q, k, sc in selfs if n == r * r]
        if r == full:
            assert s[f"q_{r}"].dtype == s[f"k_{r}"].dtype == F32
            continue
        ref = sum(torch.softmax(q.double() * sc @ k.double().transpose(-1, -2), -1).mean(1)
                  for q, k, sc in layers) / len(layers)
        assert s[f"self_{r}"].dtype == F32
        assert relative_error(s[f"self_{r}"], ref) <= TOL[F32]


def test_inversion_runs_in_float32(small_bf16_segmenter, monkeypatch):
    import faseg_rt.segmenter as segmenter_module

    seen = []
    invert = segmenter_module.invert

    def spy(z0, eps, config):
        z1 = invert(z0, eps, config)
        seen.append((z0, eps, z1))
        return z1

    monkeypatch.setattr(segmenter_module, "invert", spy)
    seg = small_bf16_segmenter
    seg.attention_summaries(preprocess([synthetic_image(40, 30, seed=4)], 64), [seg.encode_text(["cat"])])
    (z0, eps, z1), = seen
    assert z0.dtype == eps.dtype == z1.dtype == F32
    a_prev, a = seg.config.inversion_coefficients()
    x0 = (z0.double() - (1 - a_prev) ** 0.5 * eps.double()) / a_prev ** 0.5
    assert relative_error(z1, a ** 0.5 * x0 + (1 - a) ** 0.5 * eps.double()) <= 1e-6


def test_refine_is_the_same_float32_code_in_a_bf16_segmenter(small_segmenter, small_bf16_segmenter):
    seg = small_bf16_segmenter
    text = seg.encode_text(["cat", "dog", "sky"])
    s = seg.attention_summaries(preprocess([synthetic_image(40, 30, seed=5)], 64), [text])
    a = seg.refine(s, text.prompts)
    b = small_segmenter.refine(s, text.prompts)
    assert a.dtype == F32
    assert (a - b).abs().max() <= 1e-6


@pytest.mark.slow
def test_bf16_masks_agree_with_fp32_masks(segmenter, bf16_segmenter):
    """Over the parity photographs; see benchmarks/README.md for the measured agreement."""
    for seed, w, h, classes, caption in PARITY_CASES:
        img = synthetic_image(w, h, seed=seed)
        a = segmenter(img, classes=classes, caption=caption)
        b = bf16_segmenter(img, classes=classes, caption=caption)
        assert b.scores.dtype == np.float32
        assert float((a.labels == b.labels).mean()) >= BF16_AGREEMENT
