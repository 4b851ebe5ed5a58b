"""Front end: BLIP captions and SigLIP / CLIP candidate classes, on tiny random
checkpoints built offline and loaded through the same from_pretrained path as real ones.

Parity: captions are compared with transformers' own generate() + decode on a separately loaded
copy of the same checkpoint; recogniser scores with the model's own forward (one template) and
with a float64 re-computation of the template ensemble written out below.  Tolerances: 1e-5
absolute on probabilities (float32 against float32 or float64, different summation order).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faseg_rt.errors import InvalidInputError, ModelLoadError
from faseg_rt.frontend.captioner import Captioner
from faseg_rt.frontend.recognizer import Recognizer, select
from faseg_rt.testing import synthetic_image

VOCAB = ["cat", "dog", "potted plant", "sky", "red car"]

# tiny models: one thread is several times faster than two on a shared 2-core machine
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    return [synthetic_image(96, 64, seed=s) for s in range(3)]


@pytest.fixture(scope="module")
def captioner(frontend_dirs):
    return Captioner.from_pretrained(frontend_dirs["blip"], device="cpu")


@pytest.fixture(scope="module")
def blip_reference(frontend_dirs):
    """The same checkpoint loaded by transformers alone, as a user of transformers would."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    return (BlipForConditionalGeneration.from_pretrained(frontend_dirs["blip"]).eval(),
            BlipProcessor.from_pretrained(frontend_dirs["blip"]))


def _generate(model, processor, images, **kw):
    """transformers' generate with the checkpoint's generation config (BLIP's generate hands
    its kwargs to the text decoder, whose own config is the library default: pass it)."""
    inputs = processor(images=images, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(pixel_values=inputs["pixel_values"],
                             generation_config=model.generation_config, **kw)
    return [" ".join(t.split()) for t in processor.batch_decode(ids, skip_special_tokens=True)]


# ---------------------------------------------------------------------------------- captioner
def test_caption_equals_transformers_generate(captioner, blip_reference, images):
    model, processor = blip_reference
    # explicit settings over the checkpoint's generation_config.json (max_length 12, 2 beams):
    # greedy, 20 new tokens
    config = captioner.generation_config
    assert (config.num_beams, config.do_sample, config.max_new_tokens) == (1, False, 20)
    assert model.generation_config.num_beams == 2
    expected = _generate(model, processor, images, num_beams=1, max_new_tokens=20)
    assert expected != _generate(model, processor, images), "the settings should matter here"
    assert captioner(images, batch_size=2) == expected
    assert [captioner([im])[0] for im in images] == expected  # batching changes nothing
    assert len(set(expected)) > 1, "captions should depend on the image"


def test_caption_overrides_and_prompt(frontend_dirs, blip_reference, images):
    model, processor = blip_reference
    cap = Captioner.from_pretrained(frontend_dirs["blip"], device="cpu",
                                    generation={"num_beams": 1, "max_new_tokens": 5})
    assert cap(images) == _generate(model, processor, images, num_beams=1, max_new_tokens=5)

    prompted = Captioner.from_pretrained(frontend_dirs["blip"], device="cpu", prompt="a photo of")
    ids = processor.tokenizer(["a photo of"], return_tensors="pt")["input_ids"].repeat(len(images), 1)
    with torch.no_grad():
        out = model.generate(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"],
                             input_ids=ids, generation_config=model.generation_config, num_beams=1,
                             max_new_tokens=20)
    full = [" ".join(t.split()) for t in processor.batch_decode(out, skip_special_tokens=True)]
    assert all(t.startswith("a photo of") for t in full)
    assert prompted(images) == [t[len("a photo of"):].strip() for t in full]


def test_captioner_refuses_bad_settings(frontend_dirs, captioner):
    with pytest.raises(InvalidInputError, match="deterministic"):
        Captioner.from_pretrained(frontend_dirs["blip"], device="cpu", generation={"do_sample": True})
    with pytest.raises(InvalidInputError, match="unknown generation setting"):
        Captioner.from_pretrained(frontend_dirs["blip"], device="cpu", generation={"beams": 3})
    with pytest.raises(InvalidInputError, match="one caption per image: num_return_sequences"):
        Captioner.from_pretrained(frontend_dirs["blip"], device="cpu",
                                  generation={"num_beams": 3, "num_return_sequences": 3})
    with pytest.raises(InvalidInputError, match="leaves no room for a caption"):
        Captioner.from_pretrained(frontend_dirs["blip"], device="cpu", prompt="a photo of",
                                  generation={"max_length": 3})
    short = Captioner.from_pretrained(frontend_dirs["blip"], device="cpu", generation={"max_length": 4})
    assert (short.generation_config.max_length, short.generation_config.max_new_tokens) == (4, None)
    with pytest.raises(InvalidInputError, match="list of images"):
        captioner("photo.jpg")


# ---------------------------------------------------------------------------------- recogniser
@pytest.fixture(scope="module")
def siglip(frontend_dirs):
    return Recognizer.from_pretrained(frontend_dirs["siglip"], device="cpu")


def _single_template_reference(path, family, images, prompts):
    """Probabilities from the model's own forward on `prompts` (one per class)."""
    from transformers import AutoProcessor, CLIPModel, SiglipModel

    model = (SiglipModel if family == "siglip" else CLIPModel).from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    if family == "siglip":  # as SigLIP was trained: text padded to full length, no text mask
        text = {"input_ids": processor.tokenizer(prompts, padding="max_length", truncation=True,
                                                 return_tensors="pt")["input_ids"]}
    else:
        text = dict(processor.tokenizer(prompts, padding=True, return_tensors="pt"))
    pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels, **text).logits_per_image          # (B, K)
    return (torch.sigmoid(logits) if family == "siglip" else logits.softmax(-1)).numpy()


@pytest.mark.parametrize("family", ["siglip", "clip"])
def test_scores_equal_model_forward_with_one_template(frontend_dirs, family, images):
    """CLIP with one null prompt: its "none" option is that prompt's column of the softmax."""
    null = "a photo."
    rec = Recognizer.from_pretrained(frontend_dirs[family], device="cpu", templates=["a photo of a {}."],
                                     null_prompts=[null])
    got = np.stack([r.scores for r in rec(images, VOCAB)])
    prompts = [f"a photo of a {c}." for c in VOCAB] + ([null] if family == "clip" else [])
    want = _single_template_reference(frontend_dirs[family], family, images, prompts)
    np.testing.assert_allclose(got, want[:, :len(VOCAB)], atol=1e-5, rtol=0)
    if family == "clip":
        assert (got.sum(1) < 1.0 - 1e-4).all()   # the rest is the "none" share


def _float64_embeddings(frontend_dirs, family, images, prompt_rows):
    """Unit image embeddings (B, D) and, per row of prompts, unit prompt embeddings (T, D),
    from the model run in float64."""
    from transformers import AutoProcessor, CLIPModel, SiglipModel

    model = (SiglipModel if family == "siglip" else CLIPModel).from_pretrained(frontend_dirs[family])
    model = model.eval().double()
    processor = AutoProcessor.from_pretrained(frontend_dirs[family])
    pad = dict(padding="max_length", truncation=True) if family == "siglip" else dict(padding=True)
    with torch.no_grad():
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"].double()
        img = model.vision_model(pixel_values=pixels).pooler_output
        if family == "clip":
            img = model.visual_projection(img)
        img = img.numpy()
        rows = []
        for prompts in prompt_rows:
            enc = processor.tokenizer(prompts, return_tensors="pt", **pad)
            if family == "siglip":
                t = model.text_model(input_ids=enc["input_ids"]).pooler_output.numpy()
            else:
                t = model.text_projection(model.text_model(**enc).pooler_output).numpy()
            rows.append(t / np.linalg.norm(t, axis=1, keepdims=True))
    return img / np.linalg.norm(img, axis=1, keepdims=True), rows, model


def test_siglip_averages_template_logits(frontend_dirs, siglip, images):
    templates = siglip.templates
    img, rows, model = _float64_embeddings(frontend_dirs, "siglip", images,
                                           [[t.format(c) for t in templates] for c in VOCAB])
    scale, bias = float(model.logit_scale.detach().exp()), float(model.logit_bias.detach())
    logits = np.stack([(img @ t.T * scale + bias).mean(1) for t in rows], 1)   # (B, K): mean over T
    want = 1 / (1 + np.exp(-logits))
    got = np.stack([r.scores for r in siglip(images, VOCAB)])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert got.min() < 0.05 < got.max(), "the tiny model's scores should straddle the threshold"
    # the renormalised mean embedding (CLIP's ensembling) gives other probabilities
    renorm = [t.mean(0) / np.linalg.norm(t.mean(0)) for t in rows]
    other = 1 / (1 + np.exp(-(img @ np.stack(renorm).T * scale + bias)))
    assert np.abs(other - got).max() > 100 * 1e-5


def test_clip_can_say_none(frontend_dirs):
    """A black image and a vocabulary of one class: not 1.0 (the softmax has a "none" option)."""
    clip = Recognizer.from_pretrained(frontend_dirs["clip"], device="cpu")
    black = np.zeros((64, 64, 3), np.uint8)
    [r] = clip([black], ["dog"])
    img, rows, model = _float64_embeddings(
        frontend_dirs, "clip", [black], [[t.format("dog") for t in clip.templates],
                                         list(clip.null_prompts)])
    emb = [t.mean(0) / np.linalg.norm(t.mean(0)) for t in rows]             # dog, none
    logits = img[0] @ np.stack(emb).T * float(model.logit_scale.detach().exp())
    want = np.exp(logits[0] - logits.max()) / np.exp(logits - logits.max()).sum()
    assert r.scores.shape == (1,) and r.scores[0] < 1.0
    np.testing.assert_allclose(r.scores[0], want, atol=1e-5, rtol=0)
    [low] = clip([black], ["dog"], threshold=float(r.scores[0]) + 1e-3)
    assert low.candidates == ()                                           # "none" is an answer


def test_kept_candidates_follow_threshold_and_count(siglip, images):
    for r in siglip(images, VOCAB, threshold=0.3, max_candidates=2):
        passing = [c for c, s in zip(VOCAB, r.scores) if s >= 0.3]
        best = sorted(passing, key=lambda c: -r.scores[VOCAB.index(c)])[:2]
        assert r.candidates == tuple(c for c in VOCAB if c in best)   # vocabulary order
        assert r.indices == tuple(VOCAB.index(c) for c in r.candidates)
    assert all(r.candidates == () for r in siglip(images, VOCAB, threshold=1.0))
    assert all(r.candidates == tuple(VOCAB) for r in siglip(images, VOCAB, threshold=0.0))


def test_select_rule():
    s = np.array([0.9, 0.2, 0.6, 0.6, 0.1], dtype=np.float32)
    assert select(s, 0.5, 6).tolist() == [0, 2, 3]
    assert select(s, 0.5, 2).tolist() == [0, 2]          # tie at the cut: the earlier class wins
    assert select(s, 0.95, 6).tolist() == []
    assert select(s, 0.0, 1).tolist() == [0]


def test_text_embeddings_cached_per_vocabulary_device_and_dtype(frontend_dirs):
    rec = Recognizer.from_pretrained(frontend_dirs["siglip"], device="cpu")
    a = rec.text_embeddings(VOCAB)
    assert rec.text_embeddings(list(VOCAB)) is a
    assert a.shape[0] == len(VOCAB)
    assert (a.norm(dim=1) < 1.0).all()    # SigLIP: the mean of unit prompt embeddings (logit mean)
    assert rec.text_embeddings(VOCAB[:2]) is not a
    assert set(rec._cache) >= {(tuple(VOCAB), rec.templates, "cpu", torch.float32)}
    rec.to("cpu", torch.float64)
    b = rec.text_embeddings(VOCAB)
    assert b is not a and list(rec._cache) == [(tuple(VOCAB), rec.templates, "cpu", torch.float64)]
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_unknown_tokens_warn_once_naming_them(frontend_dirs, images):
    rec = Recognizer.from_pretrained(frontend_dirs["siglip"], device="cpu")
    names = ["cat", "猫", "собака"]
    with pytest.warns(UserWarning, match="2 class name.*'猫', 'собака'.*SigLIP 2") as got:
        rec(images[:1], names)
    assert len([w for w in got if "unknown tokens" in str(w.message)]) == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec(images[:1], names)                       # cached: no second warning
        Recognizer.from_pretrained(frontend_dirs["siglip2"], device="cpu")(images[:1], names)


@pytest.mark.parametrize("kw, match", [
    (dict(threshold=1.5), "lie in \\[0, 1\\]"),
    (dict(threshold=float("nan")), "lie in \\[0, 1\\]"),
    (dict(max_candidates=0), "integer >= 1"),
    (dict(max_candidates=2.5), "integer >= 1"),
])
def test_recognizer_refuses_bad_selection(siglip, images, kw, match):
    with pytest.raises(InvalidInputError, match=match):
        siglip(images[:1], VOCAB, **kw)


@pytest.mark.parametrize("vocab, match", [([], "empty"), (["cat", "Cat"], "twice")])
def test_recognizer_refuses_bad_vocabulary(siglip, images, vocab, match):
    with pytest.raises(InvalidInputError, match=match):
        siglip(images[:1], vocab)


def test_unsupported_family_and_missing_checkpoint(frontend_dirs, tmp_path):
    with pytest.raises(ModelLoadError, match="'blip' checkpoint; the recogniser supports"):
        Recognizer.from_pretrained(frontend_dirs["blip"], device="cpu")
    with pytest.raises(ModelLoadError, match="'siglip' checkpoint; the captioner supports"):
        Captioner.from_pretrained(frontend_dirs["siglip"], device="cpu")
    with pytest.raises(ModelLoadError) as e:
        Captioner.from_pretrained(tmp_path / "nowhere", device="cpu")
    assert "\n" not in str(e.value)
