"""Segmenter with caption="auto" and the candidate modes, on the 64 px tiny model.

The automatic path must equal the manual one: the caption the captioner gives, the classes the
caption names and the recogniser keeps, segmented as an explicit class list in the modes' order,
with labels mapped back to the vocabulary.
"""

from __future__ import annotations

import numpy as np
import pytest

from faseg_rt import Segmenter
from faseg_rt.errors import InvalidInputError, ModelLoadError
from faseg_rt.frontend import Captioner, Recognizer
from faseg_rt.frontend.caption_classes import classes_in_caption
from faseg_rt.frontend.plan import FrontEnd
from faseg_rt.images import preprocess
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


def _by_score(answer):
    """The recogniser's kept classes by decreasing score, computed here from its scores."""
    return tuple(sorted(answer.candidates, key=lambda c: -answer.scores[VOCAB.index(c)]))


def _check_against_manual(small_segmenter, img, res, caption, expected):
    """res equals segmenting `expected` (that order) with `caption`, labels over VOCAB."""
    assert res.candidates == expected
    if not expected:
        assert not res.labels.any()
        return
    manual = small_segmenter(img, classes=list(expected), caption=caption)
    lut = np.array([0] + [VOCAB.index(c) + 1 for c in expected])
    np.testing.assert_array_equal(res.labels, lut[manual.labels])   # label k = VOCAB[k-1]
    np.testing.assert_array_equal(res.scores, manual.scores)
    assert set(res.present()) <= set(expected)


@pytest.mark.parametrize("mode", ["recognizer", "auto"])
def test_auto_equals_manual_with_labels_over_the_vocabulary(small_segmenter, loaded, images, mode):
    cap, rec = loaded
    seg = _with_frontend(small_segmenter, cap, rec, candidate_threshold=0.01, max_candidates=3)
    answers = rec(images, VOCAB, threshold=0.01, max_candidates=3)
    captions = cap(images)
    assert any(0 < len(a.candidates) < len(VOCAB) for a in answers), "need a strict subset"
    # masks against the manual runs at batch 1 only; batch 2 is checked below, and why not its masks
    auto = seg.segment_batch(images, VOCAB, captions="auto", candidates=mode, batch_size=1)
    for img, a, caption, res in zip(images, answers, captions, auto):
        named = tuple(classes_in_caption(caption, VOCAB)) if mode == "auto" else ()
        found = _by_score(a)
        expected = tuple(dict.fromkeys(named + found))
        assert res.caption == caption
        np.testing.assert_allclose(res.class_scores, a.scores, atol=1e-6)  # other batch split
        assert res.classes == tuple(VOCAB) and res.captioner == cap.name and res.recognizer == rec.name
        assert res.sources == {c: tuple(s for s, g in (("caption", named), ("recognizer", found))
                                        if c in g) for c in expected}
        assert res.selection == {"candidate_threshold": 0.01, "max_candidates": 3}
        _check_against_manual(small_segmenter, img, res, caption, expected)
    exact = seg.segment_batch(images, VOCAB, captions="auto", candidates=mode, batch_size=2)
    for r, a in zip(exact, auto):  # batch-invariant by default: the single calls' bytes
        assert r.caption == a.caption and r.candidates == a.candidates
        np.testing.assert_array_equal(r.labels, a.labels)
        np.testing.assert_array_equal(r.class_scores, a.class_scores)
    batched = seg.segment_batch(images, VOCAB, captions="auto", candidates=mode, batch_size=2,
                                batch_invariant=False)
    assert [(r.caption, r.candidates, r.sources) for r in batched] == \
        [(r.caption, r.candidates, r.sources) for r in auto]                # the front end batched
    for r, a in zip(batched, auto):
        np.testing.assert_allclose(r.class_scores, a.class_scores, atol=1e-6)
    # Shared batching holds for the networks: a batch of 2 gives the attention summaries of
    # batch 1 within float rounding (~2e-6 relative here).  Its masks are not compared: at this
    # 64 px config the random model's maps are near-flat and the coarsest are 1 x 1 and 2 x 2,
    # so their normalisation turns that rounding into score differences of ~0.1 and moves
    # 10-30 % of the labels (measured on these images).  Batched = single masks are checked at
    # 512 px by test_segmenter_parity.test_batch_gives_the_per_image_results (scores <= 1e-4).
    text = small_segmenter.encode_text(list(auto[0].candidates or VOCAB))
    pair = small_segmenter.attention_summaries(preprocess(images[:2], small_segmenter.config.image_size), [text, text])
    alone = small_segmenter.attention_summaries(preprocess(images[:1], small_segmenter.config.image_size), [text])
    for key, one in alone.items():
        both = pair[key][: one.shape[0]]
        assert (both - one).abs().max() <= 1e-5 * one.abs().max(), key
    emb = rec.text_embeddings(VOCAB)
    seg(images[1], classes=VOCAB, candidates="recognizer")
    assert rec.text_embeddings(VOCAB) is emb   # no move per call: the class embeddings stay cached


def test_caption_mode_order_and_sources(small_segmenter, loaded, images):
    cap, rec = loaded
    seg = _with_frontend(small_segmenter, cap, rec, candidate_threshold=0.01, max_candidates=2)
    caption = "a red car beside two dogs, a cat and a potted plant under the sky"
    res = seg(images[0], classes=VOCAB, caption=caption, candidates="caption")
    expected = ("red car", "dog", "cat", "potted plant", "sky")         # caption order, plurals
    _check_against_manual(small_segmenter, images[0], res, caption, expected)
    assert res.sources == {c: ("caption",) for c in expected}
    assert res.class_scores is None and res.recognizer is None and res.selection is None
    assert res.captioner is None                                          # the caption was given
    # auto: caption classes first, then the recogniser's others; max_candidates caps only those
    auto = seg(images[0], classes=VOCAB, caption="a cat", candidates="auto")
    found = _by_score(rec([images[0]], VOCAB, threshold=0.01, max_candidates=2)[0])
    assert auto.candidates == tuple(dict.fromkeys(("cat",) + found))
    assert auto.sources["cat"] == (("caption", "recognizer") if "cat" in found else ("caption",))
    # a caption mode on an image without a caption: the captioner writes it, and it is the prompt
    own = seg(images[1], classes=VOCAB, candidates="caption")
    assert own.caption == cap([images[1]])[0] and own.captioner == cap.name
    assert own.candidates == tuple(classes_in_caption(own.caption, VOCAB))


def test_lexicon_extends_the_caption_words(small_segmenter, loaded, images):
    cap, rec = loaded
    seg = _with_frontend(small_segmenter, cap, rec, lexicon={"red car": ["automobile"]})
    res = seg(images[0], classes=VOCAB, caption="an automobile", candidates="caption")
    assert res.candidates == ("red car",)
    assert small_segmenter(images[0], classes=VOCAB, caption="an automobile",
                           candidates="caption").candidates == ()
    # a key outside the request's vocabulary is ignored (one lexicon serves many vocabularies)
    other = _with_frontend(small_segmenter, cap, rec, lexicon={"truck": ["lorry"], "red car": ["auto"]})
    assert other(images[0], classes=VOCAB, caption="a lorry and an auto",
                 candidates="caption").candidates == ("red car",)
    with pytest.raises(InvalidInputError, match="lexicon must be a non-empty dict"):
        FrontEnd(lexicon=["automobile"])


def test_explicit_subset_keeps_vocabulary_indices(small_segmenter, images):
    subset = small_segmenter(images[0], classes=["dog", "sky"], caption="shapes")
    res = small_segmenter(images[0], classes=VOCAB, caption="shapes", candidates=["sky", "Dog"])
    assert res.candidates == ("sky", "dog") and res.segmented == ("sky", "dog")  # the caller's order
    ordered = small_segmenter(images[0], classes=["sky", "dog"], caption="shapes")
    lut = np.array([0, 4, 2])
    np.testing.assert_array_equal(res.labels, lut[ordered.labels])
    np.testing.assert_array_equal(res.scores, ordered.scores)
    assert not np.array_equal(ordered.scores, subset.scores[::-1])  # the order reaches the prompt
    assert res.class_scores is None and res.recognizer is None and res.captioner is None
    assert res.sources == {"sky": ("given",), "dog": ("given",)}
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
        _with_frontend(small_segmenter, None, frontend_dirs["blip"])(images[0], ["cat"],
                                                                  candidates="recognizer")
    with pytest.raises(InvalidInputError, match="has none: pass captioner="):
        _with_frontend(small_segmenter, None, None)(images[0], ["cat"], caption="auto")
    with pytest.raises(InvalidInputError, match="has none: pass captioner="):
        _with_frontend(small_segmenter, None, None)(images[0], ["cat"], candidates="caption")


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
    with pytest.raises(InvalidInputError, match="'recognizer'.*did you mean 'auto'"):
        small_segmenter(images[0], classes=VOCAB, candidates="atuo")   # 'recogniser' is an alias
