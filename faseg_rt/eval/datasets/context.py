"""PASCAL Context (59 classes + background) on VOC2010, val split (5104 images).

Layout (`--root` points at `VOCdevkit/VOC2010`):
    JPEGImages/<id>.jpg
    SegmentationClassContextColor/<id>.png    label PNG of the 60-class ids (see below)
    ImageSets/SegmentationContext/val.txt     one id per line

How labels are decoded. The published evaluation reads these PNGs with
`np.array(Image.open(path))` and compares the result with predicted class indices, so the files
it uses are palette ("P") or gray ("L") PNGs whose pixel *values* are the class ids 0..59
(255 = ignore); "Color" refers to the palette they are displayed with. Such files are read as
indices directly. A PNG stored as RGB (e.g. a copy saved after `.convert("RGB")`) is decoded
with `COLOR_TO_ID` below: class i <-> colour i of the PASCAL VOC colour map
(`faseg_rt.io.color_palette`), and the VOC map's colour 255 (224, 224, 192) <-> ignore. This
RGB table is our documented convention (the colours a VOC-palette PNG of the ids shows), not
the mmsegmentation/ADE-style Context palette, which repeats colours and so cannot be inverted.
Any other colour in an RGB label is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.datasets.base import IGNORE_INDEX, SegDataset, read_split_file
from faseg_rt.io import color_palette

# The standard 59-class PASCAL Context subset, alphabetical, ids 1..59; 0 = background.
# Two-word names are spelled with a space as in FA-Seg's prompts.
CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat",
    "book", "bottle", "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth",
    "computer", "cow", "cup", "curtain", "dog", "door", "fence", "floor", "flower", "food",
    "grass", "ground", "horse", "keyboard", "light", "motorbike", "mountain", "mouse", "person",
    "plate", "platform", "potted plant", "road", "rock", "sheep", "shelves", "sidewalk", "sign",
    "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "tv monitor", "wall",
    "water", "window", "wood",
)

# Published background threshold for PASCAL Context.
THRESHOLD = 0.50

# Devkit spellings and the CLIP word-piece respellings of the published class lists.
ALIASES: dict[str, str] = {
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor",
    "aerop lane": "aeroplane",
    "compu ter": "computer",
    "bed clothes": "bedclothes",
}


def _color_table() -> dict[tuple[int, int, int], int]:
    pal = color_palette(256)
    table = {tuple(int(v) for v in pal[i]): i for i in range(len(CLASSES))}
    table[tuple(int(v) for v in pal[IGNORE_INDEX])] = IGNORE_INDEX
    return table


# RGB colour -> label id (0..59, or 255 = ignore), for RGB-stored ground truth.
COLOR_TO_ID: dict[tuple[int, int, int], int] = _color_table()


def ids_to_rgb(labels: np.ndarray) -> np.ndarray:
    """Colour-code an (H, W) id map with `COLOR_TO_ID`'s colours: (H, W, 3) uint8."""
    return color_palette(256)[np.asarray(labels, dtype=np.uint8)]


def rgb_to_ids(rgb: np.ndarray, source: str = "label") -> np.ndarray:
    """Decode an (H, W, 3) colour-coded label image to ids with `COLOR_TO_ID`."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    code = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    lut_keys = np.array([(r << 16) | (g << 8) | b for (r, g, b) in COLOR_TO_ID], dtype=np.int32)
    lut_vals = np.array(list(COLOR_TO_ID.values()), dtype=np.uint8)
    order = np.argsort(lut_keys)
    keys, vals = lut_keys[order], lut_vals[order]
    pos = np.clip(np.searchsorted(keys, code), 0, len(keys) - 1)
    found = keys[pos] == code
    if not found.all():
        bad = int(code[~found][0])
        raise InvalidInputError(
            f"{source}: colour {((bad >> 16) & 255, (bad >> 8) & 255, bad & 255)} is not in the "
            "Context colour table (faseg_rt.eval.datasets.context.COLOR_TO_ID)")
    return vals[pos]


class PascalContext(SegDataset):
    """Reader for PASCAL Context-59 val; palette/gray PNGs as ids, RGB PNGs via the colour table."""

    name = "context"
    class_names = CLASSES
    default_threshold = THRESHOLD
    aliases = ALIASES
    root_hint = ("VOCdevkit/VOC2010 (holding JPEGImages, SegmentationClassContextColor, "
                 "ImageSets/SegmentationContext)")
    split_file = Path("ImageSets/SegmentationContext/val.txt")
    root_marker = str(split_file)
    root_levels = ("VOC2010", "VOCdevkit/VOC2010")

    def _read_ids(self) -> list[str]:
        self._require(self.root / "JPEGImages", self.root / "SegmentationClassContextColor",
                      self.root / self.split_file)
        return read_split_file(self.root / self.split_file)

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClassContextColor" / f"{image_id}.png"

    def load_label(self, image_id: str) -> np.ndarray:
        path = self.label_path(image_id)
        with Image.open(path) as im:
            if im.mode in ("P", "L"):
                return np.array(im, dtype=np.uint8)
            if im.mode in ("RGB", "RGBA"):
                return rgb_to_ids(np.array(im.convert("RGB")), source=str(path))
            raise InvalidInputError(f"{path}: unsupported label PNG mode {im.mode}")
