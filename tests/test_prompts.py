"""Dual prompts: token spans recorded while building P' must match prefix tokenization
(the reference's independent method) for every vocabulary, including ones word matching breaks."""

import warnings

import pytest

from faseg_rt.errors import InvalidInputError
from faseg_rt.method.prompts import build_dual_prompts
from faseg_rt.method.reference import reference_spans

VOCABS = [
    ["cat"],
    ["aeroplane", "potted plant", "tv monitor", "dining table"],   # multi-token names
    ["car", "red car", "car park"],                                 # repeated words
    ["café", "Straße", "日本の猫", "hair drier"],                     # non-ASCII
    ["traffic light", "fire hydrant", "stop sign", "parking meter"],
]


@pytest.mark.parametrize("classes", VOCABS)
def test_spans_match_prefix_tokenization(tokenizer, classes):
    p = build_dual_prompts(tokenizer, classes)
    chunks, spans = reference_spans(tokenizer, list(classes))
    assert [list(c.classes) for c in p.chunks] == chunks
    assert [list(c.spans) for c in p.chunks] == spans
    for chunk in p.chunks:
        assert chunk.input_ids == tuple(tokenizer(chunk.text, padding="max_length", max_length=77)["input_ids"])
        for name, (s, e) in zip(chunk.classes, chunk.spans):
            assert list(chunk.input_ids[s:e]) == tokenizer(name, add_special_tokens=False)["input_ids"]


def test_aeroplane_is_two_tokens_and_its_map_is_their_mean(tokenizer):
    p = build_dual_prompts(tokenizer, ["aeroplane", "cat"])
    (s, e), _ = p.chunks[0].spans
    assert e - s == 2  # "aerop" + "lane"
    m = p.token_matrix()
    assert m[s:e, 0].tolist() == [0.5, 0.5]
    assert m.sum(0).tolist() == pytest.approx([1.0, 1.0])


def test_long_vocabulary_is_split_into_chunks_that_fit(tokenizer):
    classes = [f"object number {i} thing" for i in range(60)]
    with pytest.warns(UserWarning, match="the full prompt is"):   # the prompt P itself is cut
        p = build_dual_prompts(tokenizer, classes)
    assert len(p.chunks) > 1
    assert sum(len(c.classes) for c in p.chunks) == 60
    assert [n for c in p.chunks for n in c.classes] == classes
    for c in p.chunks:
        n_tok = len(tokenizer(c.text, add_special_tokens=False)["input_ids"])
        assert n_tok <= 75
        assert c.spans[-1][1] <= 76
    chunks, spans = reference_spans(tokenizer, classes)
    assert [list(c.spans) for c in p.chunks] == spans
    m = p.token_matrix()
    assert m.shape == (77 * len(p.chunks), 60)
    assert m.sum(0).tolist() == pytest.approx([1.0] * 60)


def test_full_prompt_with_caption_and_truncation_warning(tokenizer):
    p = build_dual_prompts(tokenizer, ["cat", "dog"], caption="  a  cat on a sofa ")
    assert p.full_text == "a cat on a sofa ; cat, dog"
    assert not p.full_truncated
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p = build_dual_prompts(tokenizer, ["cat"], caption="word " * 100)
    assert p.full_truncated
    assert any("full prompt" in str(x.message) for x in w)
    assert len(p.full_ids) == 77


@pytest.mark.parametrize("classes, match", [
    ([], "empty"),
    (["cat", ""], "empty or whitespace"),
    (["cat", "   "], "empty or whitespace"),
    (["cat", "Cat"], "appears twice"),
    ("cat,dog", "list of names"),
    (["cat", 3], "not a string"),
    (["word " * 80], "tokens long"),
])
def test_bad_class_lists_are_refused_clearly(tokenizer, classes, match):
    with pytest.raises(InvalidInputError, match=match):
        build_dual_prompts(tokenizer, classes)


def test_class_prompts_of_an_earlier_build_give_the_same_prompts(tokenizer):
    classes = ["cat", "potted plant", "aeroplane"]
    first = build_dual_prompts(tokenizer, classes)
    again = build_dual_prompts(tokenizer, classes, caption="a cat", chunks=first.chunks)
    assert again == build_dual_prompts(tokenizer, classes, caption="a cat")
    with pytest.raises(ValueError, match="another class list"):
        build_dual_prompts(tokenizer, ["dog"], chunks=first.chunks)
