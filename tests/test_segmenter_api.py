"""Public API behaviour: inputs, results, errors, caching."""

import numpy as np
import pytest
import torch
from PIL import Image

from faseg_rt import FASegError, InvalidInputError, ModelLoadError, Segmenter
from faseg_rt.io import color_palette


def test_result_fields_save_and_overlay(segmenter, parity_cases, tmp_path):
    c = parity_cases[0]
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


@pytest.mark.parametrize("kind", ["path", "array", "gray", "rgba", "palette", "uint16"])
def test_image_kinds_give_the_same_masks(segmenter, parity_cases, tmp_path, kind):
    c = parity_cases[0]
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
    if kind in ("gray", "palette"):
        # different pixels, so only check it runs and gives a full-size result
        res = segmenter(x, classes=c["classes"], caption=c["caption"])
        assert res.labels.shape == c["fast"].labels.shape
        return
    res = segmenter(x, classes=c["classes"], caption=c["caption"])
    assert np.array_equal(res.labels, c["fast"].labels)
    assert np.abs(res.scores - c["fast"].scores).max() <= 1e-5


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_threshold(segmenter, parity_cases, threshold):
    with pytest.raises(InvalidInputError, match="threshold"):
        segmenter(parity_cases[0]["image"], classes=["cat"], threshold=threshold)


def test_threshold_changes_only_labels(segmenter, parity_cases):
    c = parity_cases[0]
    hi = segmenter(c["image"], classes=c["classes"], caption=c["caption"], threshold=1.0)
    assert (hi.labels == 0).all()
    assert np.array_equal(hi.scores, c["fast"].scores)


def test_text_cache_is_reused(segmenter):
    a = segmenter.encode_text(["cat", "dog"], "x")
    b = segmenter.encode_text(["cat", "dog"], "x")
    assert a is b
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
    from faseg_rt.segmenter import default_device_dtype

    assert default_device_dtype("cpu", "fp32") == (torch.device("cpu"), torch.float32)
    assert default_device_dtype("cpu", "torch.float32")[1] == torch.float32
    for bad in ("int8", torch.int64):
        with pytest.raises(InvalidInputError, match="dtype"):
            default_device_dtype("cpu", bad)
    with pytest.raises(InvalidInputError, match="device"):
        default_device_dtype("gpu0", None)
