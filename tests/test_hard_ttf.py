"""Fast HARD / TTF against the literal dense reference on synthetic attention.

Synthetic attention is softmax of random peaked logits (well conditioned, like a trained
model).  In float64 the factorised form must equal the dense one to rounding (1e-9): that checks
the algebra.  In float32 against the float64 reference: scores within 1e-4.
"""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from faseg_rt.config import FASegConfig
from faseg_rt.method.hard import apply_affinity_coarse, class_maps, cross_fusion, hard, minmax_normalize
from faseg_rt.method.reference import dense_affinity, reference_hard_ttf
from faseg_rt.method.ttf import labels_from_scores, resize_labels, ttf

CFG = FASegConfig()


def synthetic_summaries(k_classes=3, heads=4, d=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for r in (8, 16, 32, 64):
        out[f"cross_{r}"] = torch.softmax(3 * torch.randn(2, 1, r * r, 77, generator=g, dtype=dtype), -1)
    for r in (8, 16, 32):
        out[f"self_{r}"] = torch.softmax(4 * torch.randn(2, r * r, r * r, generator=g, dtype=dtype), -1)
    out["q_64"] = torch.randn(2, heads, 4096, d, generator=g, dtype=dtype)
    out["k_64"] = torch.randn(2, heads, 4096, d, generator=g, dtype=dtype)
    spans = [[(1, 2), (3, 5), (6, 7)][:k_classes]]
    return out, spans


def fast_scores(s, spans, dtype):
    s = {k: v.to(dtype) for k, v in s.items()}
    c = cross_fusion({r: s[f"cross_{r}"] for r in CFG.resolutions}, CFG.cross_weights, 64)
    tm = torch.zeros(77, len(spans[0]), dtype=dtype)
    for i, (a, b) in enumerate(spans[0]):
        tm[a:b, i] = 1.0 / (b - a)
    maps = class_maps(c, tm).reshape(2, -1, 64, 64)
    m = hard(maps, {r: s[f"self_{r}"] for r in (8, 16, 32)}, s["q_64"], s["k_64"], CFG.self_weights, CFG.tau)
    return ttf(m, 512)


def dense_reference(s, spans, dtype):
    s = {k: v.to(dtype) for k, v in s.items()}
    selfs = {r: s[f"self_{r}"] for r in (8, 16, 32)}
    selfs[64] = torch.softmax(s["q_64"] @ s["k_64"].transpose(-1, -2), -1).mean(1)
    return reference_hard_ttf({r: s[f"cross_{r}"] for r in CFG.resolutions}, selfs, spans, 0.55)


@pytest.fixture(scope="module")
def summaries():
    return synthetic_summaries()


@pytest.fixture(scope="module")
def case(summaries):
    """The summaries with the dense float64 reference (eight 4096 x 4096 matrices): slow tier."""
    s, spans = summaries
    return s, spans, dense_reference(s, spans, torch.float64)


@pytest.mark.slow
def test_factorised_hard_equals_dense_in_float64(case):
    s, spans, (ref_scores, ref_labels) = case
    fast = fast_scores(s, spans, torch.float64)[0].numpy()
    assert np.abs(fast - ref_scores).max() < 1e-9


@pytest.mark.slow
def test_fast_float32_within_1e4_of_float64_reference(case):
    s, spans, (ref_scores, ref_labels) = case
    fast = fast_scores(s, spans, torch.float32)
    assert np.abs(fast[0].numpy() - ref_scores).max() <= 1e-4
    labels = labels_from_scores(fast, 0.55)[0].numpy()
    assert (labels == ref_labels).mean() >= 0.999


@pytest.mark.slow  # a dense 4096 x 4096 float64 affinity per resolution
def test_coarse_affinity_equals_dense_matrix_product():
    g = torch.Generator().manual_seed(1)
    for r in (8, 16, 32):
        S = torch.softmax(torch.randn(1, r * r, r * r, generator=g, dtype=torch.float64), -1)
        x = torch.rand(1, 2, 64, 64, generator=g, dtype=torch.float64)
        dense = (dense_affinity(S[0]) @ x.reshape(2, 4096).T).T.reshape(1, 2, 64, 64)
        torch.testing.assert_close(apply_affinity_coarse(S, x), dense, rtol=0, atol=1e-12)


def test_minmax_constant_map_becomes_zero():
    o = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).reshape(4, 4)])[None]
    out = minmax_normalize(o)
    assert torch.equal(out[0, 0], torch.zeros(4, 4))
    assert out[0, 1].min() == 0 and out[0, 1].max() == 1


class MaxNumel(TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.max = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.max = max(self.max, t.numel())
        return out


def test_fast_path_builds_no_n_squared_tensor(summaries):
    """No op on the fast HARD path outputs anything near a 4096 x 4096 matrix (per latent)."""
    s, spans = summaries
    with MaxNumel() as m:
        hard_in = fast_scores(s, spans, torch.float32)
    # biggest legitimate tensors: 2 x 3 x 512 x 512 scores, the 2 x 1024 x 1024 self_32 input
    assert hard_in.shape == (1, 3, 512, 512)
    assert m.max < 4096 * 4096, m.max


def test_ttf_unflips_the_mirror_and_averages():
    a = torch.rand(1, 2, 64, 64, dtype=torch.float64)
    maps = torch.cat([a, a.flip(-1)])                       # the mirror's maps are mirrored
    out = ttf(maps, 512)
    up = torch.nn.functional.interpolate(a, size=(512, 512), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out, up, rtol=0, atol=1e-12)


def test_labels_threshold_and_argmax():
    s = torch.tensor([[[[0.2, 0.9]], [[0.5, 0.1]]]])       # (1, K=2, 1, 2)
    assert labels_from_scores(s, 0.55).tolist() == [[[0, 1]]]
    assert labels_from_scores(s, 0.1).tolist() == [[[2, 1]]]


@pytest.mark.parametrize("size", [(96, 64), (50, 70), (640, 480), (500, 375), (1, 1), (1000, 3), (2049, 1537)])
def test_label_resize_matches_pil_nearest(size):
    from PIL import Image

    lab = np.random.default_rng(0).integers(0, 7, (512, 512)).astype(np.int32)
    expect = np.asarray(Image.fromarray(lab, mode="I").resize(size, Image.NEAREST))
    got = resize_labels(torch.from_numpy(lab), size[1], size[0]).numpy()
    assert np.array_equal(got, expect)
