"""Image input: paths / PIL images / arrays -> 8-bit RGB, and the resized [image, mirror] pixels.

Policy (documented in README "Errors and limits"):
- any PIL mode is converted to 8-bit RGB; 16-bit and 32-bit gray are scaled (>> 8), not clipped;
  alpha is dropped; palette images use their palette;
- EXIF orientation is NOT applied: the masks align with the stored pixel array, as dataset
  annotations (COCO, VOC) do and as the published code does; pass an
  `ImageOps.exif_transpose(img)` yourself for the displayed orientation;
- images over MAX_IMAGE_PIXELS are refused before decoding (decompression-bomb guard).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import InvalidInputError

#: Largest accepted image, in pixels (about 16k x 16k); larger files are refused before decoding.
MAX_IMAGE_PIXELS = 268_435_456


def _describe(x) -> str:
    return str(x) if isinstance(x, (str, os.PathLike)) else type(x).__name__


def _open_path(path: Path) -> Image.Image:
    if not path.exists():
        raise InvalidInputError(f"image {path} does not exist")
    if path.is_dir():
        raise InvalidInputError(f"image {path} is a directory, not an image file")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"image {path} is an empty (0-byte) file")
    return _open_file(path, str(path))


def _open_bytes(data) -> Image.Image:
    """Encoded image bytes (e.g. read by Ray Data in a worker) -> decoded PIL image.

    A BytesIO with a `name` attribute (the file it came from) is named so in error messages.
    """
    what = str(getattr(data, "name", "") or "(given as bytes)")
    if isinstance(data, io.BytesIO):
        data = data.getvalue()
    data = bytes(data)
    if not data:
        raise InvalidInputError(f"image {what} is empty (0 bytes)")
    return _open_file(io.BytesIO(data), what)


def _open_file(fp, what: str) -> Image.Image:
    """Open, size-check and fully decode a path or file object (`what` names it in errors)."""
    try:
        img = Image.open(fp)
    except UnidentifiedImageError:
        raise InvalidInputError(f"{what} is not an image PIL can read (JPEG, PNG, ...)") from None
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"cannot open image {what}: {e}") from None
    _check_size(img, what)
    try:
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise InvalidInputError(f"image {what} is corrupt or truncated ({e}); re-export or skip it") from None
    return img


def _check_size(img: Image.Image, what: str) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise InvalidInputError(f"image {what} has zero size ({w} x {h})")
    if w * h > MAX_IMAGE_PIXELS:
        raise InvalidInputError(
            f"image {what} is {w} x {h} = {w * h} pixels, over the limit of {MAX_IMAGE_PIXELS} "
            "(decompression-bomb guard); downscale it first")


def _from_array(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InvalidInputError(
            f"an image array must be H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA); got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidInputError(f"image array has zero size {a.shape}")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise InvalidInputError("image array contains NaN or infinite values")
        raise InvalidInputError(
            f"image array has dtype {a.dtype}; pass uint8 (0..255) or uint16, e.g. "
            "(arr * 255).round().astype(np.uint8) for floats in [0, 1]")
    mode = "L" if a.ndim == 2 else ("RGB" if a.shape[2] == 3 else "RGBA")
    return Image.fromarray(np.ascontiguousarray(a), mode=mode)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (16/32-bit gray scaled down, alpha dropped)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img).astype(np.int64)
        a = np.clip(a >> 8, 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L").convert("RGB")
    if img.mode == "F":
        a = np.asarray(img)
        if not np.isfinite(a).all():
            raise InvalidInputError("floating-point image contains NaN or infinite values")
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_image(image) -> Image.Image:
    """A path, encoded bytes, PIL image or uint8 array -> 8-bit RGB PIL image (see module doc for the policy)."""
    if isinstance(image, (str, os.PathLike)):
        img = _open_path(Path(image))
    elif isinstance(image, (bytes, bytearray, memoryview, io.BytesIO)):
        img = _open_bytes(image)
    elif isinstance(image, Image.Image):
        img = image
        _check_size(img, "given as a PIL image")
    elif isinstance(image, np.ndarray):
        img = _from_array(image)
    else:
        raise InvalidInputError(
            f"cannot read an image from {_describe(image)}; pass a path, encoded bytes, a PIL image or an "
            "H x W x 3 uint8 array")
    return to_rgb(img)


def preprocess(images: list[Image.Image], size: int) -> torch.Tensor:
    """RGB images -> (B, 3, size, size) uint8, each resized with PIL bicubic (spec step 2).

    The mirror and the scaling to [-1, 1] happen on the device (`pair_pixels`).
    """
    arrs = [np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.uint8) for img in images]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def pair_pixels(batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 3, s, s) uint8 -> (2B, 3, s, s) in [-1, 1]: [image 0, mirror 0, image 1, mirror 1, ...]."""
    x = batch.to(torch.float32) / 127.5 - 1.0
    x = torch.stack([x, x.flip(-1)], dim=1).flatten(0, 1)
    return x.to(dtype)
