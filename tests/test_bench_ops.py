"""faseg_rt.bench.ops: the per-class ratios and the call's speed-up bound they give (pure
arithmetic on given timings; the timings themselves are benchmarks/README.md's)."""

from __future__ import annotations

import pytest

from faseg_rt.bench.ops import ceiling, class_ratios


def rows():
    return [{"class": "conv", "op": "a", "fp32_ms": 30.0, "bf16_ms": 10.0},
            {"class": "conv", "op": "b", "fp32_ms": 10.0, "bf16_ms": 10.0},
            {"class": "linear", "op": "c", "fp32_ms": 20.0, "bf16_ms": 10.0},
            {"class": "attention", "op": "unet self", "fp32_ms": 9.0, "bf16_ms": 10.0},
            {"class": "attention", "op": "HARD S_64", "fp32_ms": 100.0, "bf16_ms": 1.0}]


def test_class_ratios_pool_times_and_ignore_hard():
    r = class_ratios(rows())
    assert r["conv"] == pytest.approx(40 / 20)
    assert r["linear"] == pytest.approx(2.0)
    assert r["attention"] == pytest.approx(0.9)     # HARD's row (fp32 by the policy) is not pooled


def test_ceiling_scales_each_class_and_keeps_the_rest():
    profile = {"total_ms": 100.0, "rows": [
        {"op": "aten::mkldnn_convolution", "self_ms": 40.0}, {"op": "aten::addmm", "self_ms": 10.0},
        {"op": "aten::mm", "self_ms": 10.0},
        {"op": "aten::_scaled_dot_product_flash_attention_for_cpu", "self_ms": 30.0},
        {"op": "aten::silu", "self_ms": 5.0}]}
    c = ceiling(profile, {"conv": 2.0, "linear": 4.0, "attention": 0.9})
    # conv 40 -> 20, linear 20 -> 5, attention at max(0.9, 1) stays 30, the rest (10) stays
    assert c["speedup"] == pytest.approx(100 / 65)
    assert c["shares"]["rest"] == pytest.approx(0.10)
    # 2.5x = 40 ms: attention keeps 30, so the other 70 ms must fit in 10 ms: 7x
    assert c["needed_ratio"] == pytest.approx(7.0)
    faster = ceiling(profile, {"conv": 2.0, "linear": 4.0, "attention": 3.0})
    assert faster["speedup"] == pytest.approx(100 / 45)
    assert faster["needed_ratio"] == pytest.approx(70 / 30)
    assert ceiling(profile, {"conv": 2.0, "linear": 4.0, "attention": 0.9}, target=4.0)["needed_ratio"] == float("inf")
