"""SegmentationResult: the typed output of one image, with saving and an overlay for people."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from faseg_rt.io import color_palette, label_colors, save_label_png

#: Rows of the overlay's legend: the classes with the most pixels, then "+ N more".
LEGEND_MAX_ROWS = 20


def legend_entries(labels: np.ndarray, classes: tuple[str, ...]) -> list[tuple[str, int]]:
    """(name, label) of every class present in `labels`, largest area first (ties: lower label)."""
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids > 0
    ids, counts = ids[keep], counts[keep]
    order = np.lexsort((ids, -counts))
    return [(classes[int(i) - 1], int(i)) for i in ids[order]]


@dataclass(frozen=True)
class SegmentationResult:
    """Masks for one image.

    labels:  (H, W) int32 at the original image size; 0 = background, k = classes[k - 1].
    scores:  (n, 512, 512) float32 flip-fused maps before thresholding (in [0, 1]) of the n
             classes that were segmented: `segmented[j]` is channel j (all K classes unless
             candidates were kept; n = 0 when none was); None when not asked for: by default the
             segmenter returns them only up to `Segmenter.SCORES_DEFAULT_MAX_CLASSES` classes
             (1 MiB per class per image).
    classes: the K class names (the vocabulary), in label order.
    caption: the caption the UNet was prompted with (given, or made by the captioner).
    candidates: the classes that were segmented when a subset was (kept by the recogniser or
             given); None when the whole vocabulary was.
    class_scores: (K,) float32 recogniser probability of each class; None when it did not run.
    captioner, recognizer: ids / directories of the models that made the caption and the
             candidates; None when not used.
    sources: candidate -> the routes that found it ("caption", "recognizer", or "given" for a
             caller's list); None when the whole vocabulary was segmented.
    selection: the recogniser's candidate_threshold and max_candidates actually applied; None
             when it did not run.
    """

    labels: np.ndarray
    scores: np.ndarray | None
    classes: tuple[str, ...]
    threshold: float
    caption: str | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    candidates: tuple[str, ...] | None = None
    class_scores: np.ndarray | None = field(default=None, compare=False)
    captioner: str | None = None
    recognizer: str | None = None
    sources: dict | None = field(default=None, compare=False)
    selection: dict | None = field(default=None, compare=False)

    @property
    def segmented(self) -> tuple[str, ...]:
        """The classes that were segmented, in the order of `scores`' channels."""
        return self.classes if self.candidates is None else self.candidates

    @property
    def candidate_threshold(self) -> float | None:
        """The recogniser's score a class needed to be kept (from `selection`); None when it
        did not run."""
        return None if self.selection is None else self.selection.get("candidate_threshold")

    def sidecar(self) -> dict:
        """What `faseg-rt segment` writes beside each mask as <stem>.json (and `label` records).

        Scores keep their full float32 value (JSON's shortest repr of the float): SigLIP's
        probabilities of absent classes are small, and rounding would turn them into 0.
        """
        scores = None if self.class_scores is None else {
            c: float(s) for c, s in zip(self.classes, self.class_scores)}
        sources = None if self.sources is None else {c: list(s) for c, s in self.sources.items()}
        return {"classes": list(self.classes), "caption": self.caption,
                "candidates": list(self.segmented), "scores": scores, "sources": sources,
                "captioner": self.captioner, "recognizer": self.recognizer,
                **(dict(self.selection) if self.selection else {})}

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the original image, like PIL's Image.size."""
        return self.labels.shape[1], self.labels.shape[0]

    def present(self) -> list[str]:
        """Names of the classes that got at least one pixel."""
        ids = np.unique(self.labels)
        return [self.classes[i - 1] for i in ids if i > 0]

    def save(self, path: str | os.PathLike) -> None:
        """Write the labels atomically: a palette PNG (VOC colours, index = label) while every
        label fits in 0..255, a 16-bit grayscale PNG (pixel value = label) above."""
        save_label_png(self.labels, path)

    def colorize(self) -> Image.Image:
        """The label map in VOC colour-map colours (extended past 255 labels), as an RGB image."""
        return Image.fromarray(label_colors(self.labels), mode="RGB")

    def overlay(self, image: Image.Image | None = None, alpha: float = 0.5) -> Image.Image:
        """Colours over the photo (background left as is), with a legend of the classes found."""
        base = (image or self.image)
        if base is None:
            base = Image.new("RGB", self.size, (0, 0, 0))
        base = base.convert("RGB")
        if base.size != self.size:
            base = base.resize(self.size, Image.BILINEAR)
        photo = np.asarray(base, dtype=np.float32)
        colors = np.asarray(self.colorize(), dtype=np.float32)
        mask = (self.labels > 0)[..., None]
        mixed = np.where(mask, (1 - alpha) * photo + alpha * colors, photo)
        out = Image.fromarray(mixed.round().astype(np.uint8), mode="RGB")
        return _add_legend(out, legend_entries(self.labels, self.classes), self.empty_reason())

    def empty_reason(self) -> str:
        """Why a mask is all background, naming the threshold that emptied it."""
        if self.candidates is not None and not self.candidates and self.candidate_threshold is not None:
            return f"no class scored >= {self.candidate_threshold:g} by the recogniser"
        if self.candidates is not None and not self.candidates:
            return "no candidate class given"
        return f"no class above the threshold {self.threshold:g}"


def _add_legend(img: Image.Image, entries: list[tuple[str, int]], empty: str) -> Image.Image:
    """The classes found under the image, largest first; past LEGEND_MAX_ROWS, "+ N more";
    `empty` when there is none."""
    font = ImageFont.load_default()
    more = len(entries) - LEGEND_MAX_ROWS
    if more > 0:
        entries = entries[:LEGEND_MAX_ROWS] + [(f"+ {more} more classes", -1)]
    row = 16
    width = max([img.width] + [24 + 7 * len(name) + 8 for name, _ in entries]
                + ([] if entries else [8 + 7 * len(empty)]))
    canvas = Image.new("RGB", (width, img.height + row * max(1, len(entries)) + 4), (255, 255, 255))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    palette = color_palette(max([256] + [idx + 1 for _, idx in entries]))
    if not entries:
        draw.text((4, img.height + 2), empty, fill=(0, 0, 0), font=font)
    for i, (name, idx) in enumerate(entries):
        y = img.height + 2 + i * row
        if idx >= 0:
            draw.rectangle([4, y + 2, 16, y + 12], fill=tuple(int(c) for c in palette[idx]),
                           outline=(0, 0, 0))
        draw.text((22, y), name, fill=(0, 0, 0), font=font)
    return canvas
