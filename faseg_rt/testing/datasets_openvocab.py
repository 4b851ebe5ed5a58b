"""Tiny look-alikes of the open-vocabulary benchmarks' on-disk layouts, for tests and demos.

Companion of `datasets.py` (VOC, Context-59, COCO-Object) for ADE20K-150, ADE20K-847,
PASCAL Context-459 and COCO-Stuff-171. Each image holds two rectangles of random classes over a
third class, and a one-pixel ignore stripe; classes are drawn from the whole vocabulary, so the
16-bit layouts hold ids above 255. Every generator writes the files in the benchmark's own form
(raw ADE annotations, 16-bit TIFFs, released COCO-Stuff maps, ...) and returns, per id, the
labels the reader must produce (dataset class ids, ignore index), so a test compares the two.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from faseg_rt.testing.datasets import SyntheticSplit


def _labels(rng: np.random.Generator, shape: tuple[int, int], num_classes: int,
            ignore: int) -> np.ndarray:
    h, w = shape
    lab = np.full((h, w), int(rng.integers(0, num_classes)), dtype=np.int64)
    for _ in range(2):
        y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        y1, x1 = int(rng.integers(y0 + 2, h + 1)), int(rng.integers(x0 + 2, w + 1))
        lab[y0:y1, x0:x1] = int(rng.integers(0, num_classes))
    lab[:, int(rng.integers(0, w))] = ignore
    return lab


def _image(rng: np.random.Generator, labels: np.ndarray) -> Image.Image:
    colours = np.random.default_rng(7).integers(0, 256, size=(int(labels.max()) + 1, 3))
    rgb = colours[labels] + rng.integers(-12, 13, size=labels.shape + (3,))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _make(root: Path, ids: list[str], num_classes: int, ignore: int, size: tuple[int, int],
          seed: int, image_path: Callable[[str], Path],
          write_label: Callable[[str, np.ndarray], None]) -> SyntheticSplit:
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if ignore <= 255 else np.uint16
    out: dict[str, np.ndarray] = {}
    for k, i in enumerate(ids):
        lab = _labels(rng, size if k % 2 == 0 else (size[1], size[0]), num_classes, ignore)
        p = image_path(i)
        p.parent.mkdir(parents=True, exist_ok=True)
        _image(rng, lab).save(p, quality=95)
        write_label(i, lab)
        out[i] = lab.astype(dtype)
    return SyntheticSplit(root, tuple(ids), out)


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_ade150(root: str | os.PathLike, n_images: int = 4, size: tuple[int, int] = (24, 32),
                seed: int = 3, form: str = "raw") -> SyntheticSplit:
    """An ADEChallengeData2016 look-alike: raw annotations (0 = other, k + 1 = class k) with
    form="raw", or only the reduced `annotations_detectron2` copy with form="reduced"."""
    root = Path(root)
    ids = [f"ADE_val_{k + 1:08d}" for k in range(n_images)]
    if form not in ("raw", "reduced"):
        raise ValueError("form must be 'raw' or 'reduced'")

    def write(i: str, lab: np.ndarray) -> None:
        if form == "raw":  # ADE's file: ignore -> 0 ("other"), class k -> k + 1
            _save(np.where(lab == 255, 0, lab + 1).astype(np.uint8),
                  root / "annotations/validation" / f"{i}.png")
        else:
            _save(lab.astype(np.uint8), root / "annotations_detectron2/validation" / f"{i}.png")

    return _make(root, ids, 150, 255, size, seed,
                 lambda i: root / "images/validation" / f"{i}.jpg", write)


def _tiff_split(root: Path, ids: list[str], num_classes: int, image_dir: str, label_dir: str,
                size: tuple[int, int], seed: int) -> SyntheticSplit:
    """JPEGs under image_dir and 16-bit TIFF labels (65535 = ignore) under label_dir."""
    return _make(root, ids, num_classes, 65535, size, seed,
                 lambda i: root / image_dir / f"{i}.jpg",
                 lambda i, lab: _save(lab.astype(np.uint16), root / label_dir / f"{i}.tif"))


def make_ade847(root: str | os.PathLike, n_images: int = 4, size: tuple[int, int] = (24, 32),
                seed: int = 4) -> SyntheticSplit:
    """An ADE20K_2021_17_01 look-alike: images_detectron2 JPEGs and 16-bit TIFF labels."""
    return _tiff_split(Path(root), [f"ADE_frame_{k:08d}" for k in range(n_images)], 847,
                       "images_detectron2/validation", "annotations_detectron2/validation",
                       size, seed)


def make_context459(root: str | os.PathLike, n_images: int = 4, size: tuple[int, int] = (24, 32),
                    seed: int = 5) -> SyntheticSplit:
    """A VOCdevkit/VOC2010 look-alike with annotations_detectron2/pc459_val 16-bit TIFFs."""
    return _tiff_split(Path(root), [f"2008_{k:06d}" for k in range(n_images)], 459,
                       "JPEGImages", "annotations_detectron2/pc459_val", size, seed)


def make_coco_stuff(root: str | os.PathLike, n_images: int = 4, size: tuple[int, int] = (24, 32),
                    seed: int = 6, form: str = "raw") -> SyntheticSplit:
    """A coco_stuff164k look-alike. form: "raw" (released stuffthingmaps, COCO id - 1),
    "trainids" (`<id>_labelTrainIds.png`) or "detectron2" (annotations_detectron2)."""
    from faseg_rt.eval.datasets.coco_stuff import STUFF_IDS, THING_IDS

    root = Path(root)
    ids = [f"{k + 139:012d}" for k in range(n_images)]
    coco_minus_one = np.array([c - 1 for c in THING_IDS + STUFF_IDS] + [255] * 85, dtype=np.uint8)

    def write(i: str, lab: np.ndarray) -> None:
        if form == "raw":
            _save(coco_minus_one[np.where(lab == 255, 171, lab)], root / "annotations/val2017" / f"{i}.png")
        elif form == "trainids":
            _save(lab.astype(np.uint8), root / "annotations/val2017" / f"{i}_labelTrainIds.png")
        elif form == "detectron2":
            _save(lab.astype(np.uint8), root / "annotations_detectron2/val2017" / f"{i}.png")
        else:
            raise ValueError("form must be 'raw', 'trainids' or 'detectron2'")

    return _make(root, ids, 171, 255, size, seed, lambda i: root / "images/val2017" / f"{i}.jpg",
                 write)
