"""Input battery: whatever a pipeline feeds in gets a correct result or ONE clear error.

Each case either checks the converted 8-bit RGB pixels against a conversion computed here
independently of PIL's convert(), or checks that the package's InvalidInputError names the
problem (never a PIL / torch exception).  Most cases call load_image / build_dual_prompts
directly (fast); one case runs the whole segmenter.

Already covered elsewhere and not repeated here: missing file, directory, 0-byte file, text file
named .jpg, truncated JPEG (test_images.test_bad_files); zero-size / 2-channel / NaN / float
arrays (test_images.test_bad_arrays); empty, duplicate, whitespace-only, non-string class names,
one over-long class name (test_prompts); caption truncation warning (test_prompts); threshold
values (test_rules) and outside [0, 1] on a Segmenter call and in the CLI (test_segmenter_api, test_cli).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from faseg_rt.errors import InvalidInputError
from faseg_rt.images import MAX_IMAGE_PIXELS, load_image
from faseg_rt.method.prompts import build_dual_prompts


# ----------------------------------------------------------------------------- file makers
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(width: int, height: int, rows: bytes, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG written by hand (no PIL), so headers can claim any size and 16-bit RGB is possible."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def rand_rgb(h=16, w=24, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def encoded(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------- refused files
def _truncated_png(tmp_path):
    b = encoded(rand_rgb(64, 64), "PNG")
    return write(tmp_path, "trunc.png", b[: len(b) // 2])


def _corrupt_jpeg_stream(tmp_path):
    b = bytearray(encoded(rand_rgb(64, 64), "JPEG"))
    mid = len(b) // 2
    b[mid:mid + 200] = b"\xff" * 200          # garbage markers in the entropy-coded data
    return write(tmp_path, "corrupt.jpg", bytes(b))


def _corrupt_jpeg_header(tmp_path):
    b = bytearray(encoded(rand_rgb(), "JPEG"))
    b[2:20] = bytes(18)
    return write(tmp_path, "badheader.jpg", bytes(b))


def _html_named_png(tmp_path):
    return write(tmp_path, "page.png", b"<!doctype html><html><body>404 not found</body></html>")


def _png_header_only(tmp_path):
    return write(tmp_path, "header.png", encoded(rand_rgb(), "PNG")[:40])


def _bomb_over_our_limit(tmp_path):
    # 12000 x 12000 = 144 Mpx: over MAX_IMAGE_PIXELS, under PIL's own error threshold
    return write(tmp_path, "big.png", png_bytes(12000, 12000, b"\0" * 10))


def _bomb_over_pil_limit(tmp_path):
    # 30000 x 30000 = 900 Mpx: PIL's Image.open raises DecompressionBombError itself
    return write(tmp_path, "bomb.png", png_bytes(30000, 30000, b"\0" * 10))


def _lazy_truncated_pil(tmp_path):
    return Image.open(_truncated_png(tmp_path))     # opened lazily: decoding happens later


def _lazy_corrupt_jpeg_pil(tmp_path):
    return Image.open(_corrupt_jpeg_stream(tmp_path))


def _huge_array(tmp_path):
    # a zero-copy 20000 x 20000 view: must be refused before anything copies 1.2 GB
    return np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))


REFUSED = {
    "truncated PNG": (_truncated_png, "corrupt or truncated"),
    "corrupt JPEG data": (_corrupt_jpeg_stream, "corrupt or truncated"),
    "corrupt JPEG header": (_corrupt_jpeg_header, "not an image PIL can read"),
    "HTML saved as .png": (_html_named_png, "not an image PIL can read"),
    "PNG cut after its header": (_png_header_only, "not an image PIL can read|corrupt or truncated"),
    "12000x12000 header (our limit)": (_bomb_over_our_limit, f"over the limit of {MAX_IMAGE_PIXELS}"),
    "30000x30000 header (PIL bomb)": (_bomb_over_pil_limit, f"over the limit of {MAX_IMAGE_PIXELS}"),
    "20000x20000 array": (_huge_array, f"over the limit of {MAX_IMAGE_PIXELS}"),
    "lazy truncated PIL image": (_lazy_truncated_pil, "PIL image is corrupt or truncated"),
    "lazy corrupt JPEG PIL image": (_lazy_corrupt_jpeg_pil, "PIL image is corrupt or truncated"),
    "bool array": (lambda p: np.zeros((4, 4, 3), bool), "dtype bool"),
    "int64 array": (lambda p: np.zeros((4, 4, 3), np.int64), "dtype int64"),
    "float array with inf": (lambda p: np.full((4, 4), np.inf), "NaN or infinite"),
    "4-D array (a batch)": (lambda p: np.zeros((2, 4, 4, 3), np.uint8), "got shape"),
    "torch tensor": (lambda p: __import__("torch").zeros(4, 4, 3), "cannot read an image from Tensor"),
    # encoded bytes are a supported input (Ray Data hands workers file contents); broken ones are not
    "bytes that are not an image": (lambda p: b"<!doctype html>404", "not an image PIL can read"),
    "empty bytes": (lambda p: b"", "empty"),
    "truncated PNG bytes": (lambda p: encoded(rand_rgb(64, 64), "PNG")[:300], "corrupt or truncated"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_input_gives_one_clear_error(tmp_path, case):
    make, match = REFUSED[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(InvalidInputError, match=match) as err:
            load_image(make(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400


# ----------------------------------------------------------------------------- accepted files
def _expect_16bit_rgb_png(tmp_path):
    a = np.random.default_rng(1).integers(0, 65536, (6, 7, 3)).astype(np.uint16)
    rows = b"".join(b"\0" + a[y].astype(">u2").tobytes() for y in range(a.shape[0]))
    return write(tmp_path, "rgb16.png", png_bytes(7, 6, rows, bit_depth=16)), (a >> 8).astype(np.uint8)


def _expect_16bit_gray_tiff(tmp_path):
    a = np.random.default_rng(2).integers(0, 65536, (5, 9)).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "gray16.tif")
    return tmp_path / "gray16.tif", np.repeat((a >> 8).astype(np.uint8)[..., None], 3, axis=2)


def _expect_cmyk_tiff(tmp_path):
    c = np.random.default_rng(3).integers(0, 256, (5, 6, 4)).astype(np.uint8)
    Image.fromarray(c, "CMYK").save(tmp_path / "cmyk.tif")
    ink, k = c[..., :3].astype(np.int64), c[..., 3:].astype(np.int64)
    return tmp_path / "cmyk.tif", np.round((255 - ink) * (255 - k) / 255).astype(np.uint8)


def _expect_la_png(tmp_path):
    la = np.random.default_rng(4).integers(0, 256, (6, 5, 2)).astype(np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    return tmp_path / "la.png", np.repeat(la[..., :1], 3, axis=2)      # alpha dropped, not blended


def _expect_palette_png_with_transparency(tmp_path):
    idx = np.random.default_rng(5).integers(0, 4, (7, 8)).astype(np.uint8)
    pal = np.array([[10, 20, 30], [200, 0, 0], [0, 255, 0], [1, 2, 250]], np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette(pal.reshape(-1).tolist())
    img.save(tmp_path / "pal.png", transparency=0)
    return tmp_path / "pal.png", pal[idx]


def _expect_one_pixel_png(tmp_path):
    return write(tmp_path, "1x1.png", png_bytes(1, 1, b"\0" + bytes([7, 8, 9]))), \
        np.array([[[7, 8, 9]]], np.uint8)


def _expect_one_pixel_wide(tmp_path):
    a = rand_rgb(300, 1, seed=6)
    return write(tmp_path, "1x300.png", encoded(a, "PNG")), a


def _expect_exif_rotated_jpeg(tmp_path):
    # stored 64 x 32 (landscape), left half red, right half blue (edge on a JPEG block boundary,
    # no chroma subsampling, so the flat colours survive), EXIF says "rotate 90" (orientation 6).
    a = np.zeros((32, 64, 3), np.uint8)
    a[:, :32] = (255, 0, 0)
    a[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "rot.jpg", quality=95, subsampling=0, exif=exif.tobytes())
    with Image.open(tmp_path / "rot.jpg") as im:
        assert im.getexif().get(0x0112) == 6
    return tmp_path / "rot.jpg", a            # policy: orientation NOT applied (stored pixels)


def _expect_multipage_tiff_first_frame(tmp_path):
    frames = [rand_rgb(6, 6, seed=s) for s in (7, 8, 9)]
    Image.fromarray(frames[0]).save(tmp_path / "multi.tif", save_all=True,
                                    append_images=[Image.fromarray(f) for f in frames[1:]])
    return tmp_path / "multi.tif", frames[0]


def _expect_uint16_rgb_array(tmp_path):
    a = np.random.default_rng(10).integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    return a, (a >> 8).astype(np.uint8)


def _expect_png_bytes(tmp_path):
    a = rand_rgb(9, 7, seed=11)
    return encoded(a, "PNG"), a


def _expect_named_bytesio(tmp_path):
    a = rand_rgb(5, 6, seed=12)
    buf = io.BytesIO(encoded(a, "PNG"))
    buf.name = "from-a-worker.png"
    return buf, a


ACCEPTED = {
    "encoded PNG bytes": (_expect_png_bytes, 0),
    "BytesIO with a name": (_expect_named_bytesio, 0),
    "16-bit RGB PNG": (_expect_16bit_rgb_png, 0),
    "16-bit gray TIFF": (_expect_16bit_gray_tiff, 0),
    "CMYK TIFF": (_expect_cmyk_tiff, 1),
    "LA PNG": (_expect_la_png, 0),
    "palette PNG with transparency": (_expect_palette_png_with_transparency, 0),
    "1x1 PNG": (_expect_one_pixel_png, 0),
    "1x300 PNG": (_expect_one_pixel_wide, 0),
    "EXIF-rotated JPEG": (_expect_exif_rotated_jpeg, 8),      # JPEG: flat colours within 8
    "multi-page TIFF": (_expect_multipage_tiff_first_frame, 0),
    "uint16 RGB array": (_expect_uint16_rgb_array, 0),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_input_converts_to_the_right_8bit_rgb(tmp_path, case):
    make, tol = ACCEPTED[case]
    src, expected = make(tmp_path)
    out = load_image(src)
    assert out.mode == "RGB"
    got = np.asarray(out)
    assert got.shape == expected.shape          # EXIF case: (32, 64), not rotated to (64, 32)
    assert np.abs(got.astype(np.int64) - expected.astype(np.int64)).max() <= tol


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to count open files")
def test_no_file_handle_stays_open(tmp_path):
    """Loading (or failing to load) files 30 times leaves no file open, multi-page TIFFs too."""
    path, _ = _expect_multipage_tiff_first_frame(tmp_path)
    bad = _truncated_png(tmp_path)
    kept = []
    before = _open_fds()
    for _ in range(15):
        kept.append(load_image(path))           # results kept alive: they must not pin the file
        with pytest.raises(InvalidInputError) as e:
            load_image(bad)
        kept.append(e.value)
    assert _open_fds() - before <= 1


# ----------------------------------------------------------------------------- class names
@pytest.mark.parametrize("classes, match", [
    (["cat", "\t\n"], "empty or whitespace"),
    (["cat", "\u00a0"], "empty or whitespace"),                  # no-break space only
    (["potted plant", "potted  plant"], "appears twice"),        # duplicate after collapsing
    (None, "list of names"),
    (["cat", b"dog"], "not a string"),
    (["cat " * 76], "76 tokens long"),                           # one over the 75-token limit
    (["x" * 5000], "tokens long"),
    (["!!!", "cat"], "class '!!!' does not keep its own tokens"),
    (["smile \U0001F642", "cat"], "class 'smile \U0001F642' does not keep its own tokens"),
])
def test_bad_class_names_are_named(tokenizer, classes, match):
    with pytest.raises(InvalidInputError, match=match):
        build_dual_prompts(tokenizer, classes)


@pytest.mark.parametrize("classes", [
    ["cat " * 75],                                               # exactly fits
    ["قطة", "כלב", "猫", "Ελληνικά"],                            # non-ASCII scripts
    ["potted\nplant", " cat\t"],                                 # whitespace collapsed
])
def test_unusual_but_valid_class_names(tokenizer, classes):
    p = build_dual_prompts(tokenizer, classes)
    assert p.classes == tuple(" ".join(c.split()) for c in classes)
    for chunk in p.chunks:
        for name, (s, e) in zip(chunk.classes, chunk.spans):
            assert e > s
            assert list(chunk.input_ids[s:e]) == tokenizer(name, add_special_tokens=False)["input_ids"]


def test_thousand_class_vocabulary_is_chunked_quietly(tiny_model_dir):
    """1000 classes: every class in exactly one chunk, in order, and no tokenizer log spam.

    A fresh tokenizer, because transformers logs "sequence length is longer than the specified
    maximum" once per tokenizer instance, to its own non-propagating logger.
    """
    from faseg_rt.model import load_tokenizer

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)        # conftest sets TRANSFORMERS_VERBOSITY=error
    try:
        classes = [f"class {i}" for i in range(1000)]
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            p = build_dual_prompts(load_tokenizer(tiny_model_dir), classes)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [n for c in p.chunks for n in c.classes] == classes
    assert all(c.spans[-1][1] <= 76 for c in p.chunks)
    assert not [r for r in records if "longer than the specified maximum" in r.getMessage()]
    # (a ResourceWarning here is another test's unclosed file, collected by chance meanwhile)
    w = [x for x in w if not issubclass(x.category, ResourceWarning)]
    assert len(w) == 1 and "full prompt" in str(w[0].message)   # the one truncation warning


# ----------------------------------------------------------------------------- end to end
def test_one_pixel_image_with_a_two_chunk_vocabulary(segmenter):
    """A 1x1 image and a vocabulary over 77 tokens (two class prompts) through the whole method."""
    classes = [f"object number {i} thing" for i in range(20)]
    with pytest.warns(UserWarning, match="full prompt is"):       # P itself is truncated: said so
        res = segmenter(np.array([[[200, 30, 60]]], np.uint8), classes=classes)
    assert len(segmenter.encode_text(classes).prompts.chunks) == 2
    assert res.labels.shape == (1, 1) and res.scores.shape == (20, 512, 512)
    assert np.isfinite(res.scores).all()
    assert 0 <= int(res.labels[0, 0]) <= 20
