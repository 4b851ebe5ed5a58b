"""Image input: paths / PIL images / arrays -> 8-bit RGB, and the resized [image, mirror] pixels.

Policy (documented in README "Errors and limits"):
- any PIL mode is converted to 8-bit RGB; 16-bit and 32-bit gray are scaled (>> 8), not clipped;
  alpha is dropped; palette images use their palette;
- EXIF orientation is applied only when asked for (`exif_transpose=True`): by default the masks
  align with the stored pixel array, as dataset annotations (COCO, VOC) do and as the published
  code does; with it, the image is turned as a viewer displays it before anything else (caption,
  recogniser, segmentation), so a phone photo stored sideways is read upright and its mask
  follows the displayed image;
- images over MAX_IMAGE_PIXELS are refused before decoding (decompression-bomb guard), whether
  they come as files, PIL images or arrays; PIL's own DecompressionBombError (raised by
  Image.open above 2 x PIL.Image.MAX_IMAGE_PIXELS) is turned into the same clear error;
- a file is opened, fully decoded and closed inside load_image, so a corrupt or truncated file
  fails here with InvalidInputError (not later, deep in the pipeline) and no file handle stays
  open (multi-page TIFFs and GIFs included: only the first frame is used);
- a lazily opened PIL image (Image.open(...) not yet loaded) is decoded here for the same reason.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from faseg_rt.errors import InvalidInputError

#: Largest accepted image, in pixels: 2**27 = 16384 x 8192 (a 100-megapixel photo fits; decoded
#: as RGB it takes 384 MiB).  Larger images are refused before decoding.  PIL refuses on its own
#: above 2 x PIL.Image.MAX_IMAGE_PIXELS (179 Mpx by default), so the limit must stay below that
#: for this message, not PIL's, to be the one users see.
MAX_IMAGE_PIXELS = 2 ** 27


def _describe(x) -> str:
    return str(x) if isinstance(x, (str, os.PathLike)) else type(x).__name__


def _open_path(path: Path, transpose: bool = False) -> Image.Image:
    """Open, check, decode and convert one file; the file is closed when this returns."""
    if not path.exists():
        raise InvalidInputError(f"image {path} does not exist")
    if path.is_dir():
        raise InvalidInputError(f"image {path} is a directory, not an image file")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"image {path} is an empty (0-byte) file")
    return _open_file(path, str(path), transpose)


def _open_bytes(data, transpose: bool = False) -> Image.Image:
    """Encoded image bytes (e.g. read by Ray Data in a worker) -> decoded PIL image.

    A BytesIO with a `name` attribute (the file it came from) is named so in error messages.
    """
    what = str(getattr(data, "name", "") or "(given as bytes)")
    if isinstance(data, io.BytesIO):
        data = data.getvalue()
    data = bytes(data)
    if not data:
        raise InvalidInputError(f"image {what} is empty (0 bytes)")
    return _open_file(io.BytesIO(data), what, transpose)


def _open_file(fp, what: str, transpose: bool = False) -> Image.Image:
    """Open, size-check and fully decode a path or file object (`what` names it in errors)."""
    try:
        img = Image.open(fp)
    except UnidentifiedImageError:
        raise InvalidInputError(f"{what} is not an image PIL can read (JPEG, PNG, ...)") from None
    except Image.DecompressionBombError as e:
        raise InvalidInputError(
            f"image {what} is over the limit of {MAX_IMAGE_PIXELS} pixels (decompression-bomb "
            f"guard: {e}); downscale it first") from None
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"cannot open image {what}: {e}") from None
    with img:
        _check_size(img, what)
        return _decode(img, f"image {what}", transpose)


def _decode(img: Image.Image, what: str, transpose: bool = False) -> Image.Image:
    """Decode all pixels now and convert to RGB: a broken file fails here, with our error type.
    transpose: apply the EXIF orientation first (module docstring)."""
    try:
        img.load()
        if transpose:
            img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except InvalidInputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise InvalidInputError(f"{what} is corrupt or truncated ({e}); re-export or skip it") from None


def _check_size(img: Image.Image, what: str) -> None:
    _check_size_wh(*img.size, what)


def _check_size_wh(w: int, h: int, what: str) -> None:
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
    _check_size_wh(a.shape[1], a.shape[0], f"given as an array of shape {a.shape}")
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


def load_image(image, exif_transpose: bool = False) -> Image.Image:
    """A path, encoded bytes, PIL image or uint8 array -> 8-bit RGB PIL image (see module doc for
    the policy); exif_transpose: turn it as its EXIF orientation says (arrays carry none)."""
    if isinstance(image, (str, os.PathLike)):
        return _open_path(Path(image), exif_transpose)
    if isinstance(image, (bytes, bytearray, memoryview, io.BytesIO)):
        return _open_bytes(image, exif_transpose)
    if isinstance(image, Image.Image):
        _check_size(image, "given as a PIL image")
        return _decode(image, "the PIL image", exif_transpose)
    if isinstance(image, np.ndarray):
        return to_rgb(_from_array(image))
    raise InvalidInputError(
        f"cannot read an image from {_describe(image)}; pass a path, encoded bytes, a PIL image "
        "or an H x W x 3 uint8 array")


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
