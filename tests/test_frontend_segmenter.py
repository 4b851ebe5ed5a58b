"""Segmenter with caption="auto" / candidates="auto" (issue 12), on the 64 px tiny model.

The automatic path must equal the manual one: the caption the captioner gives, the classes the
recogniser keeps, segmented as an explicit class list, with labels mapped back to the vocabulary.
"""

from __future__ import annotations

import numpy as np
import pytest

from faseg_rt import Segmenter
from faseg_rt.errors import InvalidInputError, ModelLoadError
from faseg_rt.frontend import Captioner, Recognizer
from faseg_rt.frontend.plan import FrontEnd
from faseg_rt.testing import synthetic_image

VOCAB = ["cat", "dog", "potted plant", "sky", "red car"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loaded(frontend_dirs):
    return (Captioner.from_pretrained(frontend_dirs["blip"], device="cpu"),
            Recognizer.from_pretrained(frontend_dirs["siglip"], device="cpu"))


def _with_frontend(small_segmenter, captioner, recognizer, **kw) -> Segmenter:
    """A segmenter sharing the small one's backend, with its own front end."""
    return Segmenter(small_segmenter.backend, small_segmenter.tokenizer, small_segmenter.config,
                     frontend=FrontEnd(captioner, recognizer, **kw))


@pytest.fixture(scope="module")
def images():
    return [synthetic_image(96, 64, seed=s) for s in (4, 5, 6)]


def test_auto_equals_manual_with_labels_over_the_vocabulary(small_segmenter, loaded, images):
    cap, rec = loaded
    seg = _with_frontend(small_segmenter, cap, rec, candidate_threshold=0.01, max_candidates=3)
    answers = rec(images, VOCAB, threshold=0.01, max_candidates=3)
    captions = cap(images)
    assert any(0 < len(a.candidates) < len(VOCAB) for a in answers), "need a strict subset"
    auto = seg.segment_batch(images, VOCAB, captions="auto", candidates="auto", batch_size=2)
    for img, a, caption, res in zip(images, answers, captions, auto):
        assert res.caption == caption and res.candidates == a.candidates
        np.testing.assert_allclose(res.class_scores, a.scores, atol=1e-6)  # other batch split
        assert res.classes == tuple(VOCAB) and res.captioner == cap.name and res.recognizer == rec.name
        if not a.candidates:
            assert not res.labels.any()
            continue
        manual = small_segmenter(img, classes=list(a.candidates), caption=caption)
        lut = np.array([0] + [VOCAB.index(c) + 1 for c in a.candidates])
        np.testing.assert_array_equal(res.labels, lut[manual.labels])   # label k = VOCAB[k-1]
        np.testing.assert_array_equal(res.scores, manual.scores)
        assert set(res.present()) <= set(a.candidates)
    single = seg(images[0], classes=VOCAB, caption="auto", candidates="auto")
    np.testing.assert_array_equal(single.labels, auto[0].labels)           # batch = one at a time
    emb = rec.text_embeddings(VOCAB)
    seg(images[1], classes=VOCAB, candidates="auto")
    assert rec.text_embeddings(VOCAB) is emb   # no move per call: the class embeddings stay cached


def test_explicit_subset_keeps_vocabulary_indices(small_segmenter, images):
    subset = small_segmenter(images[0], classes=["dog", "sky"], caption="shapes")
    res = small_segmenter(images[0], classes=VOCAB, caption="shapes", candidates=["sky", "Dog"])
    assert res.candidates == ("dog", "sky") and res.segmented == ("dog", "sky")
    lut = np.array([0, 2, 4])
    np.testing.assert_array_equal(res.labels, lut[subset.labels])
    assert res.class_scores is None and res.recognizer is None and res.captioner is None
    with pytest.raises(InvalidInputError, match="not in the vocabulary"):
        small_segmenter(images[0], classes=VOCAB, candidates=["zebra"])


def test_no_candidate_kept_gives_background(small_segmenter, loaded, images):
    cap, rec = loaded
    seg = _with_frontend(small_segmenter, cap, rec, candidate_threshold=1.0)
    res = seg(images[1], classes=VOCAB, candidates="auto")
    assert res.candidates == () and res.labels.shape == (64, 96) and not res.labels.any()
    assert res.scores.shape[0] == 0 and res.present() == []
    assert res.sidecar()["candidates"] == [] and len(res.sidecar()["scores"]) == len(VOCAB)


def test_models_load_on_first_use_only(small_segmenter, frontend_dirs, tmp_path, images):
    seg = _with_frontend(small_segmenter, tmp_path / "no-captioner", tmp_path / "no-recogniser")
    assert seg(images[0], classes=["cat"], caption="a cat").labels.shape == (64, 96)  # nothing loads
    with pytest.raises(ModelLoadError, match="captioner"):
        seg(images[0], classes=["cat"], caption="auto")
    with pytest.raises(ModelLoadError, match="'blip' checkpoint; the recogniser"):
        _with_frontend(small_segmenter, None, frontend_dirs["blip"])(images[0], ["cat"], candidates="auto")
    with pytest.raises(InvalidInputError, match="no captioner"):
        _with_frontend(small_segmenter, None, None)(images[0], ["cat"], caption="auto")


@pytest.mark.parametrize("kw, match", [
    (dict(candidate_threshold=-0.1), "lie in \\[0, 1\\]"),
    (dict(max_candidates=0), "integer >= 1"),
])
def test_bad_frontend_settings_fail_before_loading(tiny_model_dir, kw, match):
    with pytest.raises(InvalidInputError, match=match):
        Segmenter.from_pretrained(tiny_model_dir, device="cpu", **kw)


def test_bad_requests(small_segmenter, images):
    with pytest.raises(InvalidInputError, match="empty"):
        small_segmenter(images[0], classes=[], candidates="auto")
    with pytest.raises(InvalidInputError, match="twice"):
        small_segmenter(images[0], classes=["cat", "cat"], caption="auto")
    with pytest.raises(InvalidInputError, match="got 1 candidates for 2 images"):
        small_segmenter.segment_batch(images[:2], VOCAB, candidates=[None])
