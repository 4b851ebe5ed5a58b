"""Public API behaviour: inputs, results, errors, caching."""

import numpy as np
import pytest
import torch
from PIL import Image

from faseg_rt import FASegError, InvalidInputError, ModelLoadError, Segmenter
from faseg_rt.io import color_palette


def test_result_fields_save_and_overlay(segmenter, fast_cases, tmp_path):
    c = fast_cases[0]
    res = c["fast"]
    assert res.labels.dtype == np.int32 and res.scores.dtype == np.float32
    assert res.classes == tuple(c["classes"]) and res.size == c["image"].size
    assert 0.0 <= res.scores.min() and res.scores.max() <= 1.0 + 1e-6
    path = tmp_path / "m.png"
    res.save(path)
    with Image.open(path) as im:
        assert im.mode == "P" and im.size == c["image"].size
        assert np.array_equal(np.array(im), res.labels)
        assert im.getpalette()[:9] == color_palette()[:3].reshape(-1).tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]   # no temp file left
    ov = res.overlay()
    assert ov.width >= c["image"].width and ov.height > c["image"].height  # legend below


@pytest.mark.slow  # eight full-size segmenter calls
@pytest.mark.parametrize("kind", ["path", "array", "gray", "rgba", "palette", "uint16"])
def test_image_kinds_give_the_same_masks(segmenter, fast_cases, tmp_path, kind):
    c = fast_cases[0]
    img = c["image"]
    if kind == "path":
        img.save(tmp_path / "x.png")
        x = str(tmp_path / "x.png")
    elif kind == "array":
        x = np.asarray(img)
    elif kind == "gray":
        x = img.convert("L")
    elif kind == "rgba":
        x = img.convert("RGBA")
    elif kind == "palette":
        x = img.convert("P", palette=Image.ADAPTIVE, colors=256)
    else:
        x = np.asarray(img).astype(np.uint16) * 257
    res = segmenter(x, classes=c["classes"], caption=c["caption"])
    # gray and palette have other pixels than the RGB original: their expected result is the
    # one of the same pixels converted to RGB by PIL (gray replicated, palette looked up)
    want = segmenter(x.convert("RGB"), classes=c["classes"], caption=c["caption"]) \
        if kind in ("gray", "palette") else c["fast"]
    assert np.array_equal(res.labels, want.labels)
    assert np.abs(res.scores - want.scores).max() <= 1e-5


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_threshold(segmenter, threshold):
    from faseg_rt.testing import synthetic_image

    with pytest.raises(InvalidInputError, match="threshold"):
        segmenter(synthetic_image(32, 32), classes=["cat"], threshold=threshold)


def test_threshold_changes_only_labels(segmenter, fast_cases):
    c = fast_cases[0]
    hi = segmenter(c["image"], classes=c["classes"], caption=c["caption"], threshold=1.0)
    assert (hi.labels == 0).all()
    assert np.array_equal(hi.scores, c["fast"].scores)


def test_text_cache_is_reused(segmenter):
    a = segmenter.encode_text(["cat", "dog"], "x")
    b = segmenter.encode_text(["cat", "dog"], "x")
    assert a.prompts is b.prompts and a.full is b.full and a.chunks is b.chunks
    assert a.chunks.shape[0] == 1 and a.full.shape == (77, segmenter.backend.dims.text_dim)


def test_missing_component_is_named(tiny_model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ModelLoadError, match="missing unet/"):
        Segmenter.from_pretrained(broken, device="cpu")


def test_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError):
        Segmenter.from_pretrained(tmp_path / "nope" / "deeper", device="cpu")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        Segmenter.from_pretrained(f, device="cpu")


def test_errors_share_one_base_type():
    assert issubclass(InvalidInputError, FASegError) and issubclass(InvalidInputError, ValueError)
    assert issubclass(ModelLoadError, FASegError)


def test_device_and_dtype_names_are_checked():
    from faseg_rt.devices import default_device_dtype

    assert default_device_dtype("cpu", "fp32") == (torch.device("cpu"), torch.float32)
    assert default_device_dtype("cpu", "torch.float32")[1] == torch.float32
    for bad in ("int8", torch.int64):
        with pytest.raises(InvalidInputError, match="dtype"):
            default_device_dtype("cpu", bad)
    with pytest.raises(InvalidInputError, match="device"):
        default_device_dtype("gpu0", None)


# --------------------------------------------------------------------------- one config per segmenter
def _weights_64(latent: int, w64: float):
    """small_config with weight w64 on the class-aware maps at full latent resolution."""
    import dataclasses

    from faseg_rt.testing import small_config

    cfg = small_config(latent)
    rs = cfg.resolutions
    return dataclasses.replace(cfg, cross_weights=dict(zip(rs, (0.15, 0.70 - w64, 0.15, w64))))


def test_shared_torch_backend_computes_with_the_segmenters_config(small_segmenter, tiny_model_dir):
    """small_segmenter's backend skips cross_8 (weight 0); a segmenter on it whose config weighs
    cross_8 scores like one loaded with that config, not from zeros."""
    from faseg_rt.testing import synthetic_image

    cfg = _weights_64(8, 0.2)
    img, classes = synthetic_image(40, 30, seed=3), ["cat", "sky"]
    shared = Segmenter(small_segmenter.backend, small_segmenter.tokenizer, cfg)
    loaded = Segmenter.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.float32, config=cfg)
    assert 8 in small_segmenter.backend.skip_cross and 8 not in shared.backend.skip_cross
    assert shared.backend.modules[2] is small_segmenter.backend.modules[2]  # weights shared, not copied
    got, want = shared(img, classes), loaded(img, classes)
    base = small_segmenter(img, classes)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)
    assert float(np.abs(got.scores - base.scores).max()) > 1e-3  # the weight on cross_8 matters
    again = Segmenter(small_segmenter.backend, small_segmenter.tokenizer, small_segmenter.config)
    assert again.backend is small_segmenter.backend  # same config: the backend itself


def test_backend_refuses_a_config_it_cannot_compute(small_segmenter):
    """Exported graphs are fixed at export: a backend that skips maps, or runs another latent
    grid, refuses a config that needs them (one line, before any work)."""
    import dataclasses

    from faseg_rt.backends.base import Backend
    from faseg_rt.testing import small_config

    be = small_segmenter.backend
    fixed = Backend(name="fixed", device=be.device, dtype=be.dtype, dims=be.dims,
                    vae_encoder=be.vae_encoder, text_encoder=be.text_encoder, unet=be.unet,
                    unet_attn=be.unet_attn, skip_cross=be.skip_cross)
    assert Segmenter(fixed, small_segmenter.tokenizer, small_segmenter.config).backend is fixed
    with pytest.raises(InvalidInputError, match=r"does not compute .* resolution\(s\) \[8\]"):
        Segmenter(fixed, small_segmenter.tokenizer, _weights_64(8, 0.2))
    with pytest.raises(InvalidInputError, match="latent size 8.*asks for 16"):
        Segmenter(dataclasses.replace(fixed, skip_cross=()), small_segmenter.tokenizer, small_config(16))


def test_a_vocabulary_is_tokenised_once_whatever_the_caption(segmenter, monkeypatch):
    from faseg_rt.method import prompts

    calls = []
    original = prompts._class_prompts

    def counted(tok, classes):
        calls.append(classes)
        return original(tok, classes)

    monkeypatch.setattr(prompts, "_class_prompts", counted)
    vocab = ["zebra", "yak", "walrus"]
    a = segmenter.encode_text(vocab, "one caption")
    b = segmenter.encode_text(vocab, "another caption")
    assert calls == [tuple(vocab)]
    assert a.prompts.chunks == b.prompts.chunks and a.prompts.full_ids != b.prompts.full_ids
