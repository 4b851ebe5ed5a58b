"""One segmentation request of the service: form fields checked into a `SegmentRequest`, and a
result turned into the answer (JSON fields and the label PNG).

Checks use the package's own rules (normalize_classes, faseg_rt.rules, load_image's pixel
limit and decoding), so the service refuses exactly what the Python API and the CLI refuse, with
the same one-line messages; nothing here needs Ray.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from PIL import Image

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError
from faseg_rt.frontend.candidates import MODES
from faseg_rt.images import load_image
from faseg_rt.io import label_png_bytes
from faseg_rt.rules import normalize_classes
from faseg_rt.results import SegmentationResult

#: The form fields POST /v1/segment reads; any other field is refused (a typo would be ignored).
FIELDS = ("image", "classes", "caption", "candidates", "threshold")


@dataclass(frozen=True)
class SegmentRequest:
    """A checked request: the decoded RGB image and what to segment it into.

    classes: the normalised vocabulary (labels index it); caption: None, "auto" or text;
    candidates: None, "auto" or a tuple of names from classes; threshold: None (the model's) or
    a number in [0, 1].
    """

    image: Image.Image
    classes: tuple[str, ...]
    caption: str | None = None
    candidates: str | tuple[str, ...] | None = None
    threshold: float | None = None

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


def build_request(image: bytes, fields: dict[str, str]) -> SegmentRequest:
    """Check the form: image bytes (decoded here, pixel limit first) and the text fields."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise InvalidInputError(f"unknown form field(s) {unknown}; the fields are {list(FIELDS)}")
    if "classes" not in fields:
        raise InvalidInputError("the form has no 'classes' field: give e.g. classes=cat,dog")
    classes = parse_classes(fields["classes"])
    caption = fields.get("caption")
    caption = caption.strip() or None if caption is not None else None
    candidates = parse_candidates(fields.get("candidates"))
    threshold = parse_threshold(fields.get("threshold"))
    if not image:
        raise InvalidInputError("the uploaded image is empty (0 bytes)")
    return SegmentRequest(load_image(image), classes, caption, candidates, threshold)


@dataclass(frozen=True)
class Answer:
    """What a request gets back: the label PNG (the bytes `faseg-rt segment` writes) and fields."""

    png: bytes
    fields: dict

    def json(self) -> dict:
        return dict(self.fields, labels_png=base64.b64encode(self.png).decode("ascii"))

    def header(self) -> str:
        """The fields as one ASCII JSON line (an HTTP header value) beside an image/png body."""
        return json.dumps(self.fields, ensure_ascii=True, separators=(",", ":"))


def answer(result: SegmentationResult) -> Answer:
    side = result.sidecar()
    width, height = result.size
    return Answer(label_png_bytes(result.labels),
                  {"classes": side["classes"], "width": int(width), "height": int(height),
                   "caption": side["caption"], "candidates": side["candidates"],
                   "sources": side["sources"], "scores": side["scores"]})
