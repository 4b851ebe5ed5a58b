"""Image input conversion and the errors for inputs that are not images."""

import io

import numpy as np
import pytest
from PIL import Image

from faseg_rt.errors import InvalidInputError
from faseg_rt.images import load_image, pair_pixels, preprocess


def rgb(w=20, h=10):
    a = np.random.default_rng(0).integers(0, 255, (h, w, 3)).astype(np.uint8)
    return Image.fromarray(a, "RGB")


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "I", "F", "1", "YCbCr"])
def test_every_mode_becomes_8bit_rgb(mode):
    img = rgb()
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (20, 10)
    if mode in ("I;16", "L"):
        np.testing.assert_array_equal(np.asarray(out)[..., 0], np.asarray(rgb().convert("L")))


def test_16bit_png_file(tmp_path):
    a = (np.arange(200, dtype=np.uint16).reshape(10, 20) * 300)
    Image.fromarray(a).save(tmp_path / "x.png")
    out = np.asarray(load_image(tmp_path / "x.png"))
    np.testing.assert_array_equal(out[..., 0], (a >> 8).astype(np.uint8))


def test_bad_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    buf = io.BytesIO()
    rgb(64, 64).save(buf, format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases = {tmp_path / "missing.png": "does not exist", tmp_path: "directory",
             tmp_path / "empty.jpg": "0-byte", tmp_path / "text.jpg": "not an image",
             tmp_path / "trunc.jpg": "truncated"}
    for path, msg in cases.items():
        with pytest.raises(InvalidInputError, match=msg):
            load_image(path)


@pytest.mark.parametrize("arr, msg", [
    (np.zeros((0, 5, 3), np.uint8), "zero size"),
    (np.zeros((5, 5, 2), np.uint8), "shape"),
    (np.zeros((5,), np.uint8), "shape"),
    (np.full((5, 5, 3), np.nan, np.float32), "NaN"),
    (np.zeros((5, 5, 3), np.float32), "dtype"),
])
def test_bad_arrays(arr, msg):
    with pytest.raises(InvalidInputError, match=msg):
        load_image(arr)


def test_not_an_image_object():
    with pytest.raises(InvalidInputError, match="cannot read an image"):
        load_image(12)


def test_pixels_pair_image_and_mirror():
    b = preprocess([rgb(), rgb(7, 9)], 512)
    assert b.shape == (2, 3, 512, 512) and b.dtype.is_floating_point is False
    p = pair_pixels(b, __import__("torch").float32)
    assert p.shape == (4, 3, 512, 512)
    assert float(p.min()) >= -1 and float(p.max()) <= 1
    assert (p[1] == p[0].flip(-1)).all() and (p[3] == p[2].flip(-1)).all()
