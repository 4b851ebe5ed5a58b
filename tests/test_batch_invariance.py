"""Batch-invariant answers: whatever shares a `segment_batch` call, each image's result is
byte-identical to its single `Segmenter.__call__` (the default), on the 64 px and 128 px small
configs; batching that shares network passes is opt-in (batch_invariant=False).

Where batch dependence enters (measured on the tiny model): the networks' matrix products.
torch's CPU GEMM picks its blocking from M = rows, so a Linear over a batch of 8 latents rounds
differently from the same rows in a batch of 2 (the time embedding first, then every layer);
convolutions, norms, attention and HARD / TTF gave identical rows here.  How many labels that
rounding moves is measured in benchmarks/README.md ("Batch invariance").
"""

from __future__ import annotations

import numpy as np
import pytest

from faseg_rt import Segmenter, rules
from faseg_rt.errors import InvalidInputError
from faseg_rt.testing import small_config, synthetic_image

IMAGES = [synthetic_image(40 + 8 * i, 30 + 4 * i, seed=50 + i) for i in range(5)]
CLASSES = [["cat", "sky"], ["dog", "grass", "car"], ["cat", "sky"], ["tree"], ["cat", "sky"]]
CAPTIONS = [None, "a street", None, "a park at noon", "a cat"]


@pytest.fixture(scope="module")
def seg128(small_segmenter):
    return Segmenter(small_segmenter.backend, small_segmenter.tokenizer, small_config(16))


def _same(a, b) -> bool:
    return (np.array_equal(a.labels, b.labels) and a.labels.dtype == b.labels.dtype
            and (a.scores is None) == (b.scores is None)
            and (a.scores is None or a.scores.tobytes() == b.scores.tobytes()))


@pytest.mark.parametrize("which", ["64px", "128px"])
def test_a_mixed_batch_answers_each_image_as_its_single_call(small_segmenter, seg128, which):
    seg = small_segmenter if which == "64px" else seg128
    singles = [seg(im, classes=c, caption=cap) for im, c, cap in zip(IMAGES, CLASSES, CAPTIONS)]
    for order, bs in (([0, 1, 2, 3, 4], 5), ([4, 2, 0, 3, 1], 2), ([2, 2, 1], 3)):
        got = seg.segment_batch([IMAGES[i] for i in order], [CLASSES[i] for i in order],
                                captions=[CAPTIONS[i] for i in order], batch_size=bs)
        for i, res in zip(order, got):
            assert _same(res, singles[i]), (which, order, i)


def test_shared_batching_is_opt_in_and_shares_the_network_passes(small_segmenter, monkeypatch):
    seg = small_segmenter
    rows = []
    real = seg.backend.unet
    monkeypatch.setattr(seg.backend, "unet", lambda **kw: rows.append(kw["latents"].shape[0]) or real(**kw))
    invariant = seg.segment_batch(IMAGES[:4], ["cat", "sky"], batch_size=4)
    assert rows == [2, 2, 2, 2]  # image + mirror, one image per pass
    rows.clear()
    shared = seg.segment_batch(IMAGES[:4], ["cat", "sky"], batch_size=4, batch_invariant=False)
    assert rows == [8]
    rows.clear()
    opt_in = Segmenter(seg.backend, seg.tokenizer, seg.config, batch_invariant=False)
    again = opt_in.segment_batch(IMAGES[:4], ["cat", "sky"], batch_size=4)
    assert rows == [8] and all(_same(a, b) for a, b in zip(shared, again))
    for a, b in zip(invariant, shared):  # the same method: shapes and classes, labels close
        assert a.labels.shape == b.labels.shape and a.classes == b.classes
        assert np.abs(a.scores - b.scores).max() < 0.5


def test_batching_rule():
    assert rules.batching("invariant") is True and rules.batching("shared") is False
    assert rules.batching(True) is True and rules.batching(np.bool_(False)) is False
    for bad, hint in (("shraed", "did you mean 'shared'"), (1, "got 1"), (None, "got None")):
        with pytest.raises(InvalidInputError, match=hint):
            rules.batching(bad)
    with pytest.raises(InvalidInputError, match="batching must be one of"):
        Segmenter(None, None, batch_invariant="yes")


@pytest.mark.parametrize("batching, exact", [("invariant", True), ("shared", False)])
def test_label_workers_write_the_single_call_masks(tiny_model_dir, small_segmenter, tmp_path,
                                                    batching, exact):
    """`label`'s worker (one batch of 4 files): batch-invariant by default, so each mask file is
    the bytes of its single call's; batching="shared" runs one network pass for the batch."""
    from faseg_rt.io import label_png_bytes
    from faseg_rt.scale.label import _SegmentWorker

    paths = []
    for i, im in enumerate(IMAGES[:4]):
        paths.append(tmp_path / f"img{i}.png")
        im.save(paths[-1])
    worker = _SegmentWorker(str(tiny_model_dir), tmp_path / "out", ["cat", "sky"], "a cat", None,
                            batch_size=4, config=small_segmenter.config, batching=batching)
    assert worker.seg.batch_invariant is exact
    rows = worker({"bytes": [p.read_bytes() for p in paths], "path": [str(p) for p in paths]})
    assert list(rows["status"]) == ["ok"] * 4, list(rows["error"])
    if exact:
        for p, im in zip(paths, IMAGES):
            single = small_segmenter(im, classes=["cat", "sky"], caption="a cat")
            assert (tmp_path / "out" / f"{p.stem}.png").read_bytes() == label_png_bytes(single.labels)


@pytest.mark.parametrize("command", [["segment", "x.png", "--classes", "cat"],
                                     ["label", "x.png", "--classes", "cat", "--out", "o"],
                                     ["eval", "--dataset", "voc", "--root", "r", "--out", "o"],
                                     ["serve"]])
def test_every_command_takes_batching_invariant_by_default(command, capsys):
    from faseg_rt.cli.main import build_parser
    from faseg_rt.serve.settings import ServeSettings

    assert build_parser().parse_args(command).batching == "invariant" == ServeSettings.default("batching")
    assert build_parser().parse_args([*command, "--batching", "shared"]).batching == "shared"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--batching", "sometimes"])
    assert "invalid choice" in capsys.readouterr().err
