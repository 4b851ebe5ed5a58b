"""SigLIP 2 in the recogniser: NaFlex checkpoints (model_type "siglip2", Siglip2Model) and the
fixed-resolution ones (model_type "siglip", SiglipModel with a Gemma tokenizer), on the tiny
random checkpoints of faseg_rt.testing.tiny_frontend.

Parity: scores are compared with transformers used as its documentation says (processor(text=,
images=) then the model's forward -> logits_per_image -> sigmoid, one template, lower-cased
text, padding to 64) and with a plain float64 re-computation of the template ensemble from the
towers' pooled outputs.  Tolerance: 1e-5 absolute on probabilities (float32, same kernels,
different batch shapes and summation order).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faseg_rt.errors import InvalidInputError
from faseg_rt.frontend.recognizer import DEFAULT_THRESHOLD, Recognizer
from faseg_rt.testing import synthetic_image

VOCAB = ["cat", "dog", "potted plant", "sky", "red car"]
TEMPLATE = "This is a photo of {}."   # capitals on purpose: SigLIP 2 must see them lower-cased
ATOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    """Three aspect ratios: NaFlex gives each its own patch grid, padded to one length."""
    return [synthetic_image(96, 64, seed=0), synthetic_image(50, 70, seed=1),
            synthetic_image(200, 30, seed=2)]


@pytest.fixture(scope="module")
def naflex(frontend_dirs):
    return Recognizer.from_pretrained(frontend_dirs["siglip2"], device="cpu")


def _reference(path, images, prompts, naflex: bool, lower: bool = True, **image_kw) -> np.ndarray:
    """(B, K) sigmoid(logits_per_image) from transformers' processor + model forward."""
    from transformers import AutoProcessor, SiglipModel, Siglip2Model

    model = (Siglip2Model if naflex else SiglipModel).from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    # the model card: lower-cased text, padding="max_length", max_length=64 (NaFlex's processor
    # and its Siglip2Tokenizer do both by themselves; the Gemma tokenizer of a fixed-res one not)
    inputs = processor(text=[p.lower() if lower else p for p in prompts], images=images, padding="max_length",
                       max_length=64, return_tensors="pt", **image_kw)
    assert "attention_mask" not in inputs   # the checkpoints' tokenizers return input_ids only
    with torch.no_grad():
        return torch.sigmoid(model(**inputs).logits_per_image).numpy()


@pytest.mark.parametrize("kind", ["siglip2", "siglip2-fixres"])
def test_scores_equal_transformers_forward_with_one_template(frontend_dirs, images, kind):
    rec = Recognizer.from_pretrained(frontend_dirs[kind], device="cpu", templates=[TEMPLATE])
    got = np.stack([r.scores for r in rec(images, VOCAB)])
    prompts = [TEMPLATE.format(c) for c in VOCAB]
    want = _reference(frontend_dirs[kind], images, prompts, naflex=kind == "siglip2")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    if kind == "siglip2-fixres":  # its Gemma tokenizer keeps capitals: the case must matter
        cased = _reference(frontend_dirs[kind], images, prompts, naflex=False, lower=False)
        assert np.abs(cased - got).max() > 100 * ATOL


def test_naflex_ensemble_equals_plain_computation(frontend_dirs, naflex, images):
    from transformers import AutoProcessor, Siglip2Model

    model = Siglip2Model.from_pretrained(frontend_dirs["siglip2"]).eval().double()
    processor = AutoProcessor.from_pretrained(frontend_dirs["siglip2"])
    with torch.no_grad():   # float64 throughout; the per-template logits averaged, then sigmoid
        img_in = processor.image_processor(images=images, return_tensors="pt")
        img_in["pixel_values"] = img_in["pixel_values"].double()
        img = model.vision_model(**img_in).pooler_output.numpy()
        img /= np.linalg.norm(img, axis=1, keepdims=True)
        scale, bias = float(model.logit_scale.exp()), float(model.logit_bias)
        logits = []
        for c in VOCAB:
            ids = processor.tokenizer([t.format(c).lower() for t in naflex.templates], padding="max_length",
                                      max_length=64, truncation=True, return_tensors="pt")["input_ids"]
            t = model.text_model(input_ids=ids).pooler_output.numpy()
            t /= np.linalg.norm(t, axis=1, keepdims=True)
            logits.append((img @ t.T * scale + bias).mean(1))                 # (B,) over T
    want = 1 / (1 + np.exp(-np.stack(logits, 1)))
    got = np.stack([r.scores for r in naflex(images, VOCAB)])
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_images_of_different_sizes_share_a_batch(naflex, images):
    grids = naflex.processor.image_processor(images=images, return_tensors="pt")["spatial_shapes"]
    assert len({tuple(g) for g in grids.tolist()}) == len(images)   # three different patch grids
    assert all(int(h) * int(w) <= 256 for h, w in grids.tolist())
    together = naflex.scores(images, VOCAB, batch_size=len(images))
    alone = np.concatenate([naflex.scores([im], VOCAB) for im in images])
    np.testing.assert_allclose(together, alone, atol=ATOL, rtol=0)


def test_max_num_patches_is_the_image_processors(frontend_dirs, images):
    rec = Recognizer.from_pretrained(frontend_dirs["siglip2"], device="cpu", templates=[TEMPLATE],
                                     max_num_patches=16)
    got = np.stack([r.scores for r in rec(images, VOCAB)])
    want = _reference(frontend_dirs["siglip2"], images, [TEMPLATE.format(c) for c in VOCAB],
                      naflex=True, max_num_patches=16)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind, value, match", [
    ("siglip2", 0, "integer >= 1"), ("siglip2", 2.5, "integer >= 1"), ("siglip2", True, "integer >= 1"),
    ("siglip", 64, "SigLIP 2 NaFlex checkpoints only"),
    ("siglip2-fixres", 64, "SigLIP 2 NaFlex checkpoints only"),
])
def test_bad_max_num_patches_is_one_line(frontend_dirs, kind, value, match):
    with pytest.raises(InvalidInputError, match=match) as e:
        Recognizer.from_pretrained(frontend_dirs[kind], device="cpu", max_num_patches=value)
    assert "\n" not in str(e.value)


def test_family_and_text_rule_are_detected(frontend_dirs):
    # config.json alone: NaFlex is its own model_type, fixed-res SigLIP 2 says "siglip"
    assert Recognizer.check(frontend_dirs["siglip2"]) == "siglip2"
    assert Recognizer.check(frontend_dirs["siglip2-fixres"]) == "siglip"
    seen = {}
    for kind in ("siglip", "siglip2", "siglip2-fixres", "clip"):
        rec = Recognizer.from_pretrained(frontend_dirs[kind], device="cpu")
        seen[kind] = (rec.family, rec.is_siglip2, rec.text_rule.lowercase, rec.text_rule.length,
                      rec.threshold)
    assert seen == {"siglip": ("siglip", False, False, 16, DEFAULT_THRESHOLD["siglip"]),
                    "siglip2": ("siglip2", True, True, 64, DEFAULT_THRESHOLD["siglip2"]),
                    "siglip2-fixres": ("siglip", True, True, 64, DEFAULT_THRESHOLD["siglip"]),
                    "clip": ("clip", False, False, None, DEFAULT_THRESHOLD["clip"])}


def test_text_is_padded_right_to_the_models_length(frontend_dirs):
    """The Gemma tokenizer has no useful model_max_length: the 64 comes from the text tower."""
    from faseg_rt.frontend.encoding import text_inputs

    rec = Recognizer.from_pretrained(frontend_dirs["siglip2-fixres"], device="cpu")
    tok = rec.processor.tokenizer
    assert tok.model_max_length > 10**6
    inputs = text_inputs(tok, ["A Photo of a CAT.", "sky " * 100], rec.text_rule)
    assert list(inputs) == ["input_ids"] and inputs["input_ids"].shape == (2, 64)
    ids = inputs["input_ids"][0].tolist()
    n = ids.index(tok.pad_token_id)
    assert ids[n - 1] == tok.eos_token_id and set(ids[n:]) == {tok.pad_token_id}  # right padding
    assert ids[:n] == tok("a photo of a cat.")["input_ids"]                       # lower-cased
    tok.padding_side = "left"  # a tokenizer set up otherwise still pads right, and is left as it was
    assert text_inputs(tok, ["A Photo of a CAT."], rec.text_rule)["input_ids"][0].tolist() == ids
    assert tok.padding_side == "left"


def test_cli_accepts_a_siglip2_recognizer(tiny_model_dir, frontend_dirs, tmp_path, capsys):
    """`--recognizer DIR` with a NaFlex checkpoint: checked, loaded, its scores in <stem>.json
    (--candidate-threshold 1 keeps nothing, so the SD model loads but never runs)."""
    from faseg_rt.cli import main

    synthetic_image(96, 64, seed=4).save(tmp_path / "a.png")
    out = tmp_path / "out"
    rc = main(["segment", str(tmp_path / "a.png"), "--classes", ",".join(VOCAB),
               "--model", str(tiny_model_dir), "--out", str(out), "--quiet", "--candidates", "recognizer",
               "--recognizer", str(frontend_dirs["siglip2"]), "--candidate-threshold", "1"])
    assert rc == 0, capsys.readouterr().err
    side = json.loads((out / "a.json").read_text())
    rec = Recognizer.from_pretrained(frontend_dirs["siglip2"], device="cpu")([tmp_path / "a.png"], VOCAB)[0]
    assert side["recognizer"] == str(frontend_dirs["siglip2"]) and side["candidates"] == []
    assert side["scores"] == {c: pytest.approx(float(s), abs=1e-6) for c, s in rec.score_dict().items()}
