"""One segmentation request of the service: form fields checked into a `SegmentRequest`, and a
result turned into the answer (JSON fields and the label PNG).

Checks use the package's own rules (normalize_classes, faseg_rt.rules, load_image's decoding),
so the service refuses what the Python API and the CLI refuse, with the same one-line messages,
plus the service's own limits (`Limits`: pixels read from the image header before decoding,
classes per request, the front-end models it has), all before any model runs.  check_request
keeps the image encoded; decode_request decodes it when the request has a place in a batch.
Nothing here needs Ray.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError
from faseg_rt.frontend.candidates import MODES, uses_caption, uses_recognizer
from faseg_rt.images import MAX_IMAGE_PIXELS, load_image
from faseg_rt.io import label_png_bytes
from faseg_rt.rules import normalize_classes
from faseg_rt.results import SegmentationResult

#: The form fields POST /v1/segment reads; any other field is refused (a typo would be ignored).
FIELDS = ("image", "classes", "caption", "candidates", "threshold", "exif_transpose")
#: Largest X-FASeg-Result header, in bytes (nginx's default header buffer is 4-8 KB): a larger
#: one is left out and X-FASeg-Result-Omitted says so (ask for JSON to get the fields).
MAX_HEADER_BYTES = 8192
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


@dataclass(frozen=True)
class Limits:
    """The service's own limits, checked before any model runs: max_pixels (from the image
    header), max_classes per request, and which front-end models it loaded (captioner,
    recognizer: False means requests that need one are refused, naming the flag)."""

    max_pixels: int = MAX_IMAGE_PIXELS
    max_classes: int = 2**31
    captioner: bool = True
    recognizer: bool = True


@dataclass(frozen=True)
class SegmentRequest:
    """A checked request: the decoded RGB image and what to segment it into.

    classes: the normalised vocabulary (labels index it); caption: None, "auto" or text;
    candidates: None, "auto" or a tuple of names from classes; threshold: None (the model's) or
    a number in [0, 1]; image: the encoded bytes until decode_request, then the RGB image.
    """

    image: Image.Image | bytes
    classes: tuple[str, ...]
    caption: str | None = None
    candidates: str | tuple[str, ...] | None = None
    threshold: float | None = None
    exif_transpose: bool = False

    @property
    def group(self) -> tuple:
        """Requests of one group run in one segment_batch call: same vocabulary and threshold."""
        return self.classes, self.threshold


def parse_classes(text: str) -> tuple[str, ...]:
    """'cat, dog' or '["cat", "dog"]' -> the normalised vocabulary (400 on empty / duplicates)."""
    text = text.strip()
    if text.startswith("["):
        names = _json_list(text, "classes")
    else:
        names = [c.strip() for c in text.split(",")] if text else []
    return normalize_classes(names)


def parse_candidates(text: str | None):
    """None / '' -> None (every class); a mode (rules.CANDIDATE_MODES, or its alias 'recogniser')
    in canonical form; a JSON list -> those names, in that order."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if rules.candidate_mode(text):
        return rules.candidate_mode(text)  # "recogniser" -> "recognizer"
    if text.startswith("["):
        return tuple(_json_list(text, "candidates"))
    raise InvalidInputError(f"candidates must be {rules.modes_text()} or a JSON list of class "
                            f"names, got {text[:80]!r}{rules.did_you_mean(text, MODES)}")


def parse_threshold(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidInputError(f"threshold must be a number in [0, 1], got {text[:80]!r}") from None
    return rules.threshold(value)


def _json_list(text: str, what: str) -> list[str]:
    try:
        names = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"{what} is not valid JSON ({e.msg} at character {e.pos}); "
                                "send a JSON list of strings or comma-separated names") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidInputError(f"{what} must be a JSON list of strings, got {text[:80]!r}")
    return names


def check_request(image: bytes, fields: dict[str, str], limits: Limits = Limits()) -> SegmentRequest:
    """Check the form (image still encoded): the text fields, the class cap, the front-end
    models the request needs, and the image's size from its header (nothing decoded)."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise InvalidInputError(f"unknown form field(s) {unknown}; the fields are {list(FIELDS)}")
    if "classes" not in fields:
        raise InvalidInputError("the form has no 'classes' field: give e.g. classes=cat,dog")
    classes = parse_classes(fields["classes"])
    if len(classes) > limits.max_classes:
        raise InvalidInputError(f"{len(classes)} classes is over this service's limit of "
                                f"{limits.max_classes} per request (its --max-classes)")
    caption = fields.get("caption")
    caption = caption.strip() or None if caption is not None else None
    candidates = parse_candidates(fields.get("candidates"))
    threshold = parse_threshold(fields.get("threshold"))
    transpose = parse_flag(fields.get("exif_transpose"), "exif_transpose")
    _check_frontend(caption, candidates, limits)
    if not image:
        raise InvalidInputError("the uploaded image is empty (0 bytes)")
    check_image_header(image, limits.max_pixels)
    return SegmentRequest(image, classes, caption, candidates, threshold, transpose)


def decode_request(request: SegmentRequest) -> SegmentRequest:
    """The request with its image decoded to RGB (EXIF orientation applied when asked)."""
    try:
        image = load_image(request.image, request.exif_transpose)
    except InvalidInputError:
        raise InvalidInputError("the uploaded image cannot be decoded (truncated or corrupt); "
                                "send a complete JPEG, PNG or WebP file") from None
    return dataclasses.replace(request, image=image)


def build_request(image: bytes, fields: dict[str, str], limits: Limits = Limits()) -> SegmentRequest:
    """check_request, then decode_request."""
    return decode_request(check_request(image, fields, limits))


def check_image_header(data: bytes, max_pixels: int) -> None:
    """Refuse what is not an image, or one over max_pixels, from its header alone."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        width = height = max_pixels + 1  # PIL's own guard (far above any service limit)
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidInputError("the uploaded file is not an image this service reads; send a "
                                "JPEG, PNG, WebP, GIF, BMP or TIFF file") from None
    if width * height > max_pixels:
        raise InvalidInputError(f"the image is {width} x {height} = {width * height} pixels, over "
                                f"the limit of {max_pixels} pixels; downscale it first")


def parse_flag(text: str | None, what: str) -> bool:
    if text is None or text.strip().lower() in _FALSE:
        return False
    if text.strip().lower() in _TRUE:
        return True
    raise InvalidInputError(f"{what} must be 1 or 0 (true / false), got {text[:80]!r}")


def _check_frontend(caption, candidates, limits: Limits) -> None:
    """400 for a request that needs a front-end model this service did not load."""
    if not limits.captioner and (caption == "auto" or (caption is None and uses_caption(candidates))):
        asked = "caption=auto" if caption == "auto" else f"candidates={candidates}"
        raise InvalidInputError(f"{asked} needs a captioner and this service has none: give a "
                                "caption, or start the service with --captioner ID_OR_DIR")
    if not limits.recognizer and uses_recognizer(candidates):
        raise InvalidInputError(f"candidates={candidates} needs a recogniser and this service has "
                                "none: give candidates as a JSON list, or start the service with "
                                "--recognizer ID_OR_DIR")


@dataclass(frozen=True)
class Answer:
    """What a request gets back: the label PNG (the bytes `faseg-rt segment` writes) and fields."""

    png: bytes
    fields: dict

    def json(self) -> dict:
        return dict(self.fields, labels_png=base64.b64encode(self.png).decode("ascii"))

    def header(self) -> str | None:
        """The fields as one ASCII JSON line (an HTTP header value) beside an image/png body, or
        None when that is over MAX_HEADER_BYTES."""
        line = json.dumps(self.fields, ensure_ascii=True, separators=(",", ":"))
        return line if len(line) <= MAX_HEADER_BYTES else None


def answer(result: SegmentationResult) -> Answer:
    side = result.sidecar()
    width, height = result.size
    return Answer(label_png_bytes(result.labels),
                  {"classes": side["classes"], "width": int(width), "height": int(height),
                   "caption": side["caption"], "candidates": side["candidates"],
                   "sources": side["sources"], "scores": side["scores"]})
