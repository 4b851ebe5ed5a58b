"""Large vocabularies: streamed labels, dense S_64 for many classes, 16-bit masks, scores
opt-in, the per-vocabulary text cache and the up-front size limits.

Exactness claims and how they are checked:
- labels streamed over class chunks == labels from the full score tensor, bit for bit (same
  maps in; `torch.equal`), on random maps with exact ties and on the segmenter end to end;
- the dense head-averaged S_64 (used above head width + 32 classes) == repeated fused attention
  within 1e-12 in float64 and 1e-5 in float32;
- per-resolution class maps == cross fusion then class maps within 1e-12 in float64.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from faseg_rt.errors import InvalidInputError
from faseg_rt.io import load_label_png, save_label_png
from faseg_rt.method import attention, hard as hard_mod
from faseg_rt.method.hard import (apply_affinity_full, apply_affinity_full_power, class_maps,
                                  class_maps_fused, cross_fusion)
from faseg_rt.method.ttf import labels_from_scores, ttf, ttf_labels


def vocabulary(k: int) -> list[str]:
    from faseg_rt.bench.vocab import large_vocabulary

    return list(large_vocabulary()[:k])


@pytest.mark.parametrize("k,chunk", [(5, 2), (37, 8), (37, 37), (64, 21), (100, 7)])
def test_streamed_labels_equal_labels_of_full_scores(k, chunk):
    g = torch.Generator().manual_seed(k)
    m = torch.rand(4, k, 8, 8, generator=g)
    m[:, k // 2] = m[:, 0]          # exact ties across chunks: the first class must win
    m[:, 1] = m[:, 0]               # and inside one
    want = labels_from_scores(ttf(m, 48), 0.5)
    assert torch.equal(ttf_labels(m, 48, 0.5, chunk_classes=chunk), want)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_dense_full_affinity_equals_fused_attention(dtype, tol):
    g = torch.Generator().manual_seed(0)
    n, heads, s, d, k = 2, 3, 8, 4, 4 + hard_mod.DENSE_AFTER_EXTRA_CLASSES + 5
    q = (torch.randn(n, heads, s * s, d, generator=g) * 0.7).to(dtype)
    kk = torch.randn(n, heads, s * s, d, generator=g).to(dtype)
    x = torch.rand(n, k, s, s, generator=g).to(dtype)
    want = apply_affinity_full(q, kk, apply_affinity_full(q, kk, x))
    got = apply_affinity_full_power(q, kk, x, tau=2)     # K > d + 32: the dense path
    assert (got - want).abs().max() <= tol
    small = x[:, :3]                                      # K <= d + 32: today's fused path
    assert torch.equal(apply_affinity_full_power(q, kk, small, tau=2),
                       apply_affinity_full(q, kk, apply_affinity_full(q, kk, small)))


def test_per_resolution_class_maps_equal_fusion_then_class_maps():
    g = torch.Generator().manual_seed(1)
    cross = {r: torch.rand(2, 3, r * r, 5, generator=g, dtype=torch.float64) for r in (1, 2, 4, 8)}
    weights = {1: 0.15, 2: 0.7, 4: 0.15, 8: 0.0}
    tm = torch.rand(15, 7, generator=g, dtype=torch.float64)
    want = class_maps(cross_fusion(cross, weights, 8), tm).reshape(2, 7, 8, 8)
    torch.testing.assert_close(class_maps_fused(cross, weights, tm, 8), want, rtol=0, atol=1e-12)


def test_capture_in_chunk_groups_equals_one_group(small_segmenter, monkeypatch):
    from faseg_rt.images import preprocess
    from faseg_rt.testing import synthetic_image

    seg = small_segmenter
    seg.clear_text_cache()                            # built here, so its warning is raised here
    with pytest.warns(UserWarning, match="the full prompt is"):
        text = seg.encode_text(vocabulary(120))
    assert text.chunks.shape[0] >= 4
    batch = preprocess([synthetic_image(40, 30, seed=3)], seg.config.image_size)
    one = seg.attention_summaries(batch, [text])
    monkeypatch.setattr(attention, "CROSS_BLOCK_BYTES", 1)  # one chunk at a time
    many = seg.attention_summaries(batch, [text])
    for name, t in one.items():
        torch.testing.assert_close(many[name], t, rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_large_vocabulary_labels_equal_the_scores_path(small_segmenter):
    from faseg_rt.testing import synthetic_image

    k = 1000
    img = synthetic_image(50, 40, seed=k)
    classes = vocabulary(k)
    small_segmenter.clear_text_cache()                # built here, so its warning is raised here
    with pytest.warns(UserWarning, match="the full prompt is"):
        lean = small_segmenter(img, classes=classes, threshold=0.0)
    assert lean.scores is None                      # opt-in above SCORES_DEFAULT_MAX_CLASSES
    full = small_segmenter.segment_batch([img], classes, threshold=0.0, return_scores=True)[0]
    assert full.scores.shape == (k, 64, 64)
    assert np.array_equal(lean.labels, full.labels)  # streamed == from the (K, H, W) scores
    assert lean.labels.max() > 0


def test_small_vocabulary_keeps_scores_by_default(small_segmenter):
    from faseg_rt.testing import synthetic_image

    res = small_segmenter(synthetic_image(40, 30), classes=["cat", "dog"])
    assert res.scores is not None and res.scores.shape == (2, 64, 64)
    lean = small_segmenter.segment_batch([synthetic_image(40, 30)], ["cat", "dog"],
                                         return_scores=False)[0]
    assert lean.scores is None and np.array_equal(lean.labels, res.labels)


def test_label_maps_past_255_are_16_bit_pngs(tmp_path):
    small = np.array([[0, 3], [255, 1]], dtype=np.int32)
    big = np.array([[0, 256], [999, 65535]], dtype=np.int32)
    save_label_png(small, tmp_path / "s.png")
    save_label_png(big, tmp_path / "b.png")
    with Image.open(tmp_path / "s.png") as a, Image.open(tmp_path / "b.png") as b:
        assert a.mode == "P" and b.mode == "I;16"
    assert np.array_equal(load_label_png(tmp_path / "s.png"), small)
    assert np.array_equal(load_label_png(tmp_path / "b.png"), big)
    with pytest.raises(ValueError, match="0..65535"):
        save_label_png(np.array([[70000]]), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_overlay_legend_lists_present_classes_largest_first():
    from faseg_rt.results import SegmentationResult, legend_entries

    labels = np.zeros((20, 20), dtype=np.int32)
    labels[:10] = 700
    labels[10:, :5] = 3
    res = SegmentationResult(labels=labels, scores=None, classes=tuple(vocabulary(1000)),
                             threshold=0.5)
    entries = legend_entries(res.labels, res.classes)
    assert [i for _, i in entries] == [700, 3]
    img = res.overlay()
    assert img.size[0] >= 20 and img.size[1] > 20
    assert res.colorize().size == (20, 20)


def test_text_embeddings_cached_per_vocabulary(small_segmenter, monkeypatch):
    import faseg_rt.segmenter as segmenter_mod

    seg = small_segmenter
    seg.clear_text_cache()
    classes = vocabulary(200)
    with pytest.warns(UserWarning, match="the full prompt is") as caught:   # one per caption
        a = seg.encode_text(classes, caption="one caption")
        b = seg.encode_text(classes, caption="another caption")
    assert len(caught) == 2
    assert a.chunks is b.chunks                     # class-prompt chunks encoded once
    assert not torch.equal(a.full, b.full)
    built = []
    real = segmenter_mod.build_dual_prompts
    monkeypatch.setattr(segmenter_mod, "build_dual_prompts",
                        lambda *x, **kw: built.append(1) or real(*x, **kw))

    def same(x):  # the cached prompts and tensors themselves
        return x.prompts is a.prompts and x.full is a.full and x.chunks is a.chunks

    assert same(seg.encode_text(classes, caption="one caption"))
    assert not built                                # a repeated call does not re-tokenize
    with pytest.warns(UserWarning, match="the full prompt is"):
        assert same(seg.encode_text([" " + classes[0]] + classes[1:], caption="one caption"))
    assert built == [1]                             # unnormalised names: built, then found


def test_vocabulary_too_large_fails_up_front(small_segmenter, monkeypatch):
    seg = small_segmenter
    calls = []
    real = seg.backend.text_encoder
    monkeypatch.setattr(seg.backend, "text_encoder", lambda **kw: calls.append(1) or real(**kw))
    monkeypatch.setattr(seg, "max_class_chunks", 3)
    seg.clear_text_cache()
    with pytest.warns(UserWarning, match="the full prompt is"), \
            pytest.raises(InvalidInputError, match="at most 3"):
        seg.encode_text(vocabulary(300))
    assert not calls


def test_vocab_benchmark_row_and_table(small_segmenter):
    from faseg_rt.bench.vocab import measure_k, vocab_table
    from faseg_rt.testing import synthetic_image

    row = measure_k(small_segmenter, synthetic_image(64, 64), vocabulary(3), scores_max=3)
    assert row["classes"] == 3 and row["chunks"] == 1 and row["peak_extra_mb"] > 0
    assert row["with_scores_peak_extra_mb"] > 0 and row["cpu_s"] > 0
    row["mb_per_class_over_first"] = None
    table = vocab_table({"model": "tiny", "device": "cpu", "dtype": "float32", "image_size": 64,
                         "rows": [row], "load_average": [1.0, 1.0, 1.0]})
    assert table.count("\n| 3 | 1 |") == 1
