"""The grounding and grouping terms of the toy trainer (faseg_rt/testing/toy_grounding.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faseg_rt.eval.datasets.toy_world import NAMES, ToyWorld


@pytest.fixture(scope="module")
def grounded(tmp_path_factory):
    """Two steps of the grounded recipe on 8 pictures at 64 px (latent 8: grids 8/4/2/1)."""
    from faseg_rt.testing.toy_train import Recipe, Trainer

    recipe = Recipe(train_images=8, batch=4, size=64, token_scale=30.0, grounding=1.0, grouping=1.0,
                    prompts="dual", lr_decay_steps=4)
    tr = Trainer(recipe, tmp_path_factory.mktemp("grounded"))
    terms = []
    for _ in range(2):
        tr.step()
        terms.append(dict(tr.last_terms))
    return tr, recipe, terms


def test_recording_processor_computes_what_diffusers_default_does(grounded):
    """Tolerance 1e-5: the same attention, explicit softmax against SDPA (float32 rounding)."""
    from faseg_rt.testing import toy_grounding

    tr = grounded[0]
    x, t, c = tr.latents[:2], torch.tensor([3, 700]), tr._frozen_text[:2]
    with torch.no_grad():
        tr._store.clear()
        recorded = tr.unet(x, t, encoder_hidden_states=c).sample
        kinds = [k for k, _, _ in tr._store]
        toy_grounding.uninstall(tr.unet)
        default = tr.unet(x, t, encoder_hidden_states=c).sample
        tr._store = toy_grounding.install(tr.unet)
    assert float((recorded - default).abs().max()) < 1e-5
    # SD 1.5 layout: 16 transformer blocks (6 down, 1 mid, 9 up), each one self- and one
    # cross-attention layer
    assert kinds.count("self") == kinds.count("cross") == 16


def test_targets_cover_the_objects_and_mirror_with_the_pictures():
    from faseg_rt.testing.toy_grounding import GroundingTargets

    world = ToyWorld(size=64)
    samples = [world.sample(3, i) for i in range(4)]
    t = GroundingTargets.build([s.mask for s in samples], [s.classes for s in samples], resolutions=(8, 4))
    for i, s in enumerate(samples):
        for o, name in enumerate(s.classes):
            share = (s.mask == NAMES.index(name) + 1).mean()
            assert float(t.cover[8][i, o].mean()) == pytest.approx(share, abs=1e-6)   # area kept
        centres = s.mask[4::8, 4::8].reshape(-1)
        expect = np.zeros(64, dtype=np.int64)
        for o, name in enumerate(s.classes):
            expect[centres == NAMES.index(name) + 1] = o + 1
        assert (t.segments[8][i].numpy() == expect).all()
    f = t.flipped()
    assert torch.equal(f.cover[4].reshape(4, -1, 4, 4), t.cover[4].reshape(4, -1, 4, 4).flip(-1))
    assert torch.equal(f.flipped().segments[8], t.segments[8])


def test_loss_is_zero_for_perfect_attention_and_larger_for_uniform():
    from faseg_rt.testing.toy_grounding import GroundingTargets, grounding_loss

    mask = np.zeros((16, 16), np.uint8)
    mask[:8, :8] = NAMES.index("cat") + 1                       # cat: the top-left quarter
    targets = GroundingTargets.build([mask], [("cat",)], resolutions=(4,))
    inside = targets.cover[4][0, 0] > 0                           # 4 of 16 cells
    tokens, idx, weight = torch.tensor([[5]]), torch.tensor([0]), torch.ones(1)
    cross = torch.full((1, 16, 77), 1 / 77)
    cross[0, :, 5] = 0
    cross[0, inside, 5] = 0.5                                     # the cat token only on the cat
    seg = targets.segments[4][0]
    selfp = (seg[:, None] == seg[None, :]).float()
    selfp = (selfp / selfp.sum(1, keepdim=True))[None]            # attention within the region
    perfect = grounding_loss([("cross", 1, cross), ("self", 1, selfp)], tokens, targets, idx, weight)
    assert float(perfect[0]) == pytest.approx(0.0, abs=1e-6) and float(perfect[1]) == pytest.approx(0.0, abs=1e-6)
    uniform = grounding_loss([("cross", 1, torch.full((1, 16, 77), 1 / 77)),
                              ("self", 1, torch.full((1, 16, 16), 1 / 16))], tokens, targets, idx, weight)
    assert float(uniform[0]) == pytest.approx((1 - 4 / 16) ** 2, rel=1e-5)
    # background cells see 12/16 of uniform attention in their region, cat cells 4/16
    assert float(uniform[1]) == pytest.approx(((1 - 12 / 16) ** 2 * 12 + (1 - 4 / 16) ** 2 * 4) / 16, rel=1e-5)


def test_fill_form_wants_the_whole_object_where_mass_takes_one_peak():
    from faseg_rt.testing.toy_grounding import GroundingTargets, grounding_loss

    mask = np.zeros((16, 16), np.uint8)
    mask[:8, :8] = NAMES.index("dog") + 1
    targets = GroundingTargets.build([mask], [("dog",)], resolutions=(4,))
    inside = (targets.cover[4][0, 0] > 0).nonzero().reshape(-1)   # 4 cells
    args = (torch.tensor([[2]]), targets, torch.tensor([0]), torch.ones(1))

    def with_token(values):
        p = torch.full((1, 16, 77), 1e-3)
        p[0, :, 2] = values
        return [("cross", 1, p)]

    peak, spread = torch.zeros(16), torch.zeros(16)
    peak[inside[0]] = 1.0
    spread[inside] = 0.25
    assert float(grounding_loss(with_token(peak), *args, form="mass")[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(grounding_loss(with_token(spread), *args, form="fill")[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(grounding_loss(with_token(peak), *args, form="fill")[0]) > 1.0   # three cells missed


def test_grounded_training_is_deterministic_and_trains_what_fa_seg_reads(grounded, tmp_path):
    from faseg_rt.testing.toy_train import Trainer

    tr, recipe, terms = grounded
    again = Trainer(recipe, tmp_path)
    for expect in terms:
        again.step()
        assert again.last_terms == expect
    assert set(terms[0]) == {"noise", "grounding", "grouping"}
    # dual prompts: caption, "caption ; classes" and "classes" per picture, each grounded on
    # the first place its class words appear
    assert len(tr.texts) == 3 and tr.ids.shape == (3 * len(tr.latents), 77)
    k = 1                                                          # one picture, all three forms
    for v in range(3):
        row = v * len(tr.latents) + k
        toks = tr._tokens[row]
        assert (toks >= 0).sum() == len(tr.world.sample(0, k).classes)
        for o in toks[toks >= 0]:
            word = tr.tokenizer.convert_ids_to_tokens(int(tr.ids[row, o])).replace("</w>", "")
            assert word in NAMES
    assert tr.opt.param_groups[0]["lr"] < recipe.lr               # the cosine decay runs


def test_bad_prompt_form_is_refused(tmp_path):
    from faseg_rt.testing.toy_train import Recipe, Trainer

    with pytest.raises(ValueError, match="prompts must be"):
        Trainer(Recipe(train_images=2, batch=2, size=64, prompts="both"), tmp_path)
