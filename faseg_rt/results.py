"""SegmentationResult: the typed output of one image, with saving and an overlay for people."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from faseg_rt.io import color_palette, save_label_png


@dataclass(frozen=True)
class SegmentationResult:
    """Masks for one image.

    labels:  (H, W) int32 at the original image size; 0 = background, k = classes[k - 1].
    scores:  (n, 512, 512) float32 flip-fused maps before thresholding (in [0, 1]) of the n
             classes that were segmented: `segmented[j]` is channel j (all K classes unless
             candidates were kept; n = 0 when none was).
    classes: the K class names (the vocabulary), in label order.
    caption: the caption the UNet was prompted with (given, or made by the captioner).
    candidates: the classes that were segmented when a subset was (kept by the recogniser or
             given); None when the whole vocabulary was.
    class_scores: (K,) float32 recogniser probability of each class; None when it did not run.
    captioner, recognizer: ids / directories of the models that made the caption and the
             candidates; None when not used.
    """

    labels: np.ndarray
    scores: np.ndarray
    classes: tuple[str, ...]
    threshold: float
    caption: str | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    candidates: tuple[str, ...] | None = None
    class_scores: np.ndarray | None = field(default=None, compare=False)
    captioner: str | None = None
    recognizer: str | None = None

    @property
    def segmented(self) -> tuple[str, ...]:
        """The classes that were segmented, in the order of `scores`' channels."""
        return self.classes if self.candidates is None else self.candidates

    def sidecar(self) -> dict:
        """What `faseg-rt segment` writes beside each mask as <stem>.json (and `label` records)."""
        scores = None if self.class_scores is None else {
            c: round(float(s), 6) for c, s in zip(self.classes, self.class_scores)}
        return {"classes": list(self.classes), "caption": self.caption,
                "candidates": list(self.segmented), "scores": scores,
                "captioner": self.captioner, "recognizer": self.recognizer}

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the original image, like PIL's Image.size."""
        return self.labels.shape[1], self.labels.shape[0]

    def present(self) -> list[str]:
        """Names of the classes that got at least one pixel."""
        ids = np.unique(self.labels)
        return [self.classes[i - 1] for i in ids if i > 0]

    def save(self, path: str | os.PathLike) -> None:
        """Write the labels as a palette PNG (VOC colours, index = label), atomically."""
        save_label_png(self.labels, path)

    def colorize(self) -> Image.Image:
        """The label map in VOC palette colours, as an RGB image."""
        return Image.fromarray(color_palette()[self.labels.astype(np.uint8)], mode="RGB")

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
        return _add_legend(out, [(name, self.classes.index(name) + 1) for name in self.present()])


def _add_legend(img: Image.Image, entries: list[tuple[str, int]]) -> Image.Image:
    font = ImageFont.load_default()
    row = 16
    width = max([img.width] + [24 + 7 * len(name) + 8 for name, _ in entries])
    canvas = Image.new("RGB", (width, img.height + row * max(1, len(entries)) + 4), (255, 255, 255))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    palette = color_palette()
    if not entries:
        draw.text((4, img.height + 2), "no class above the threshold", fill=(0, 0, 0), font=font)
    for i, (name, idx) in enumerate(entries):
        y = img.height + 2 + i * row
        draw.rectangle([4, y + 2, 16, y + 12], fill=tuple(int(c) for c in palette[idx]), outline=(0, 0, 0))
        draw.text((22, y), name, fill=(0, 0, 0), font=font)
    return canvas
