"""Tiny synthetic datasets in the three real on-disk layouts, for tests and demos.

Real datasets cannot be downloaded here, so the tests build look-alikes: a few small JPEG images
(the colour of each region is its class's VOC palette colour plus noise) and label PNGs with
known content: background, two rectangles of random classes, and a 255 (ignore) stripe. Image
sizes alternate between (h, w) and (w, h) so that "original size" handling is exercised.
Every generator returns the ids and the exact label arrays it wrote.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from faseg_rt.io import color_palette, save_label_png


@dataclass(frozen=True)
class SyntheticSplit:
    """What a generator wrote: the dataset root, ids in split order, and each id's labels."""

    root: Path
    ids: tuple[str, ...]
    labels: Mapping[str, np.ndarray]


def _labels(rng: np.random.Generator, shape: tuple[int, int], num_classes: int) -> np.ndarray:
    h, w = shape
    lab = np.zeros((h, w), dtype=np.uint8)
    for _ in range(2):
        c = int(rng.integers(1, num_classes))
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        y1, x1 = int(rng.integers(y0 + 2, h + 1)), int(rng.integers(x0 + 2, w + 1))
        lab[y0:y1, x0:x1] = c
    lab[:, int(rng.integers(0, w))] = 255  # a 1-pixel ignore stripe, like VOC's boundaries
    return lab


def _image(rng: np.random.Generator, labels: np.ndarray) -> Image.Image:
    pal = color_palette(256).astype(np.int16)
    rgb = pal[labels] + rng.integers(-12, 13, size=labels.shape + (3,))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _make(root: Path, ids: Sequence[str], num_classes: int, size: tuple[int, int], seed: int,
          image_path, write_label) -> SyntheticSplit:
    rng = np.random.default_rng(seed)
    labels: dict[str, np.ndarray] = {}
    for k, i in enumerate(ids):
        shape = size if k % 2 == 0 else (size[1], size[0])
        lab = _labels(rng, shape, num_classes)
        p = image_path(i)
        p.parent.mkdir(parents=True, exist_ok=True)
        _image(rng, lab).save(p, quality=95)
        write_label(i, lab)
        labels[i] = lab
    return SyntheticSplit(root, tuple(ids), labels)


def _write_split(path: Path, ids: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def make_voc(root: str | os.PathLike, n_images: int = 4, size: tuple[int, int] = (24, 32),
             seed: int = 0) -> SyntheticSplit:
    """A VOCdevkit/VOC2012 look-alike: JPEGImages, SegmentationClass palette PNGs, val.txt."""
    root = Path(root)
    ids = [f"2007_{k:06d}" for k in range(n_images)]
    _write_split(root / "ImageSets/Segmentation/val.txt", ids)
    return _make(root, ids, 21, size, seed, lambda i: root / "JPEGImages" / f"{i}.jpg",
                 lambda i, lab: save_label_png(lab, root / "SegmentationClass" / f"{i}.png"))


def make_context(root: str | os.PathLike, n_images: int = 4, size: tuple[int, int] = (24, 32),
                 seed: int = 1, color: str = "rgb") -> SyntheticSplit:
    """A VOCdevkit/VOC2010 look-alike with SegmentationClassContextColor labels.

    color="rgb" writes colour-coded RGB PNGs (decoded through the colour table);
    color="palette" writes palette PNGs of the ids, like the published files.
    """
    from faseg_rt.eval.datasets.context import ids_to_rgb

    root = Path(root)
    ids = [f"2008_{k:06d}" for k in range(n_images)]
    _write_split(root / "ImageSets/SegmentationContext/val.txt", ids)
    gt_dir = root / "SegmentationClassContextColor"

    def write_label(i: str, lab: np.ndarray) -> None:
        if color == "rgb":
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ids_to_rgb(lab)).save(gt_dir / f"{i}.png")
        elif color == "palette":
            save_label_png(lab, gt_dir / f"{i}.png")
        else:
            raise ValueError("color must be 'rgb' or 'palette'")

    return _make(root, ids, 60, size, seed, lambda i: root / "JPEGImages" / f"{i}.jpg",
                 write_label)


def make_coco_object(root: str | os.PathLike, n_images: int = 4,
                     size: tuple[int, int] = (24, 32), seed: int = 2,
                     annotation_dir: str = "annotation_object") -> SyntheticSplit:
    """A coco_stuff164k look-alike: images/val2017 JPEGs, gray label PNGs (0..80, 255)."""
    root = Path(root)
    ids = [f"{k + 139:012d}" for k in range(n_images)]
    gt_dir = root / annotation_dir / "val2017"
    gt_dir.mkdir(parents=True, exist_ok=True)
    return _make(root, ids, 81, size, seed, lambda i: root / "images/val2017" / f"{i}.jpg",
                 lambda i, lab: Image.fromarray(lab, mode="L").save(gt_dir / f"{i}.png"))


def candidates_from_labels(labels: Mapping[str, np.ndarray], class_names: Sequence[str]
                           ) -> dict[str, str]:
    """Candidate strings listing each image's ground-truth classes (an oracle recogniser)."""
    out = {}
    for i, lab in labels.items():
        present = [int(c) for c in np.unique(lab) if 0 < c < len(class_names)]
        out[i] = " ".join(class_names[c] for c in present)
    return out


def write_json(path: str | os.PathLike, mapping: Mapping[str, str]) -> Path:
    """Write an image id -> string mapping as the published JSON inputs are stored."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(mapping), indent=1))
    return path
