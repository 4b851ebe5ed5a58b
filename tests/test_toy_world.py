"""The toy world (exact masks, captions that name what is drawn), its trainer and its scorer:
the pieces of the localisation study (benchmarks/localisation.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faseg_rt.eval.datasets.toy_world import CLASSES, NAMES, ToyWorld


def test_world_is_deterministic_by_seed_and_index():
    w = ToyWorld(size=64)
    a, b, c = w.sample(3, 5), w.sample(3, 5), w.sample(4, 5)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and np.array_equal(a.mask, b.mask)
    assert a.caption == b.caption and a.classes == b.classes
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


@pytest.mark.parametrize("index", range(12))
def test_masks_are_exact_and_captions_name_what_is_drawn(index):
    w = ToyWorld(size=96, kind="objects")
    s = w.sample(0, index)
    ids = {NAMES.index(c) + 1 for c in s.classes}
    assert set(np.unique(s.mask)) == ids | {0}            # every named class is visible, no other
    img = np.asarray(s.image).astype(int)
    for name, _shape, colour in CLASSES:
        k = NAMES.index(name) + 1
        if k in ids:   # object pixels carry the class colour (jitter <= 25, no noise on objects)
            assert np.abs(img[s.mask == k] - np.asarray(colour)).max() <= 25, name
    for name in NAMES:
        assert (name in s.caption.split() or f"{name}," in s.caption.split()) == (name in s.classes)
    words = ToyWorld(size=96, caption_form="words", kind="objects").sample(0, index)
    assert words.caption == " ".join(words.classes) and words.classes == s.classes


@pytest.mark.parametrize("index", range(6))
def test_named_colours_are_the_colours_drawn(index):
    from faseg_rt.eval.datasets.toy_world import PALETTE

    s = ToyWorld(size=96, colours="named", kind="objects").sample(0, index)
    words, img = s.caption.replace(",", "").split(), np.asarray(s.image).astype(int)
    palette = dict(PALETTE)
    for name in s.classes:
        said = words[words.index(name) - 1]                      # "a red cat": the word before
        px = img[s.mask == NAMES.index(name) + 1]
        assert np.abs(px - np.asarray(palette[said])).max() <= 25, (name, said)


def test_scenes_have_stuff_synonyms_and_captions_that_miss_things():
    """The scenes world: every listed class is visible and exact; the caption names the classes
    of `named` (by name or a lexicon synonym) and no other; objects and stuff both occur; the
    synonym and miss rates are near the module's probabilities (200 pictures)."""
    from faseg_rt.eval.datasets import toy_world as tw
    from faseg_rt.frontend.caption_classes import classes_in_caption

    w, seen, syn, nameable, missed, multi = ToyWorld(size=64), set(), 0, 0, 0, 0
    for i in range(200):
        s = w.sample(0, i)
        assert set(np.unique(s.mask)) - {0} == {NAMES.index(c) + 1 for c in s.classes}
        assert s.classes[:len(s.named)] == s.named and len(set(s.classes)) == len(s.classes)
        words = s.caption.replace(",", "").split()
        for name in s.classes:
            said = [x for x in (name, *tw.SYNONYMS.get(name, ())) if x in words]
            assert bool(said) == (name in s.named), (s.caption, name)
            if said and tw.SYNONYMS.get(name):
                nameable += 1
                syn += said[0] != name
        assert classes_in_caption(s.caption, NAMES) == list(s.named)   # the lexicons map the synonyms
        objects = [c for c in s.classes if NAMES.index(c) < len(tw.CLASSES)]
        if len(objects) >= 2:
            multi += 1
            missed += any(c not in s.named for c in objects)
        seen.update(s.classes)
    assert seen == set(NAMES)
    assert abs(syn / nameable - tw.P_SYNONYM) < 0.12 and abs(missed / multi - tw.P_MISS_OBJECT) < 0.12


def test_stuff_regions_carry_their_colour_and_objects_occlude_them():
    from faseg_rt.eval.datasets import toy_world as tw

    found = set()
    for i in range(40):
        s = ToyWorld(size=64).sample(1, i)
        img = np.asarray(s.image).astype(float)
        for k, (name, colour) in enumerate(tw.STUFF):
            region = s.mask == len(tw.CLASSES) + k + 1
            if region.sum() > 50:      # mean colour within jitter and texture of the base colour
                assert np.abs(img[region].mean(0) - np.asarray(colour)).max() < 30, name
                found.add(name)
    assert found == {"sky", "grass", "water"}


def test_bad_world_settings_are_refused():
    with pytest.raises(ValueError, match="caption_form must be one of"):
        ToyWorld(caption_form="poem")
    with pytest.raises(ValueError, match="colours must be one of"):
        ToyWorld(colours="rainbow")
    with pytest.raises(ValueError, match="kind must be one of"):
        ToyWorld(kind="cities")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few steps of the trainer on 16 pictures at 64 px: enough to run every piece."""
    from faseg_rt.testing.toy_train import Recipe, Trainer

    torch.manual_seed(0)
    recipe = Recipe(train_images=16, batch=4, size=64)
    tr = Trainer(recipe, tmp_path_factory.mktemp("toy"))
    losses = [tr.step() for _ in range(3)]
    return tr, losses


def test_trainer_is_deterministic_and_saves_a_loadable_model(trained, tmp_path):
    from faseg_rt import Segmenter
    from faseg_rt.testing.toy_eval import toy_config
    from faseg_rt.testing.toy_train import Recipe, Trainer

    tr, losses = trained
    again = Trainer(Recipe(train_images=16, batch=4, size=64), tmp_path / "again")
    assert [again.step() for _ in range(3)] == losses
    assert tr.latents.shape == (32, 4, 8, 8)                     # pictures and their mirrors
    assert abs(float(tr.latents.std()) - 1.0) < 1e-3             # scaled to unit std
    # FA-Seg samples mean + std * noise: that must be the mean the UNet was trained on
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        post = tr.vae.encode(x).latent_dist
    assert float(post.std.max()) < 1e-3 * float(post.mean.std())
    d = tr.model_dir(tmp_path / "model")
    prov = json.loads((d / "model_index.json").read_text())["faseg_rt_test_model"]
    assert prov["steps"] == 3 and prov["recipe"]["size"] == 64
    seg = Segmenter.from_pretrained(d, device="cpu", dtype=torch.float32, config=toy_config(64))
    assert seg.backend.dims.scaling_factor == pytest.approx(tr.vae.config.scaling_factor)


def test_text_encoder_trains_only_when_asked(tmp_path):
    from faseg_rt.testing.toy_train import Recipe, Trainer

    tr = Trainer(Recipe(train_images=4, batch=2, size=64, text="embeddings"), tmp_path)
    emb = tr.text_encoder.get_input_embeddings().weight
    frozen = next(p for n, p in tr.text_encoder.named_parameters() if n.endswith("final_layer_norm.weight"))
    before, before_frozen = emb.detach().clone(), frozen.detach().clone()
    tr.step()
    assert not torch.equal(emb, before) and torch.equal(frozen, before_frozen)


def test_evaluate_scores_in_range_and_the_study_table(trained, tmp_path):
    from faseg_rt import Segmenter
    from faseg_rt.bench.localisation import table
    from faseg_rt.testing.toy_eval import THRESHOLDS, evaluate, toy_config

    tr, _ = trained
    seg = Segmenter.from_pretrained(tr.model_dir(tmp_path / "m"), device="cpu", dtype=torch.float32,
                                    config=toy_config(64))
    res = evaluate(seg, tr.world, n=3)
    assert 0 <= res["miou"] <= res["miou_best"] <= 1 and set(res["miou_by_threshold"]) == set(THRESHOLDS)
    assert set(res["per_class"]) == {"background", *NAMES}
    assert res["ratio"] and all(v > 0 for v in res["ratio"].values())
    assert all(0 <= v <= 1 for v in res["pointing"].values())
    row = dict(res, step=3, train_minutes=0.1, loss=0.5)
    row = json.loads(json.dumps(row))                         # as read back from curve.jsonl
    md = table({"baseline": [row, row]}).splitlines()
    assert md[2].startswith("| baseline | 3 | 0.1 | 0.500 |") and len(md) == 3


def test_line_plot_writes_a_png(tmp_path):
    from PIL import Image

    from faseg_rt.bench.plot import line_plot

    p = line_plot({"a": [(0, 0.1), (1, 0.3)], "b": [(0, 0.2)]}, tmp_path / "c.png", size=(400, 300))
    im = Image.open(p)
    assert im.size == (400, 300) and len(np.unique(np.asarray(im).reshape(-1, 3), axis=0)) > 3   # lines, markers, text


def _class_token_cosine(trainer) -> float:
    """Mean cosine between the text states of the six class words in the class prompt."""
    ids = trainer.tokenizer(", ".join(NAMES), padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        h = trainer.text_encoder(ids).last_hidden_state[0, 1:12:2]        # cat, dog, ... (commas between)
    h = torch.nn.functional.normalize(h, dim=-1)
    c = h @ h.T
    return float((c.sum() - c.diagonal().sum()) / (c.numel() - len(c)))


def test_token_scale_makes_the_class_tokens_distinct(tmp_path):
    """A random text encoder's states are position- and context-dominated (every class token gets
    nearly the same key); scaled token embeddings make them differ, as a trained encoder's do."""
    from faseg_rt.testing.toy_train import Recipe, Trainer

    plain = Trainer(Recipe(train_images=2, batch=2, size=64), tmp_path / "a")
    scaled = Trainer(Recipe(train_images=2, batch=2, size=64, token_scale=30.0), tmp_path / "b")
    assert _class_token_cosine(plain) > 0.5 > 0.25 > _class_token_cosine(scaled)
