"""ADE20K-150 (SceneParsing, ADEChallengeData2016), validation split (2000 images): 150 classes.

Layout (`--root` points at `ADEChallengeData2016`, or the folder holding it):
    images/validation/<id>.jpg
    annotations/validation/<id>.png          gray PNG: 0 = "other" (unlabelled), 1..150 classes
    annotations_detectron2/validation/<id>.png   (optional) the same, already reduced (below)

The benchmark's protocol ("reduce zero label", as mmsegmentation and detectron2 use it): label
0 becomes the ignore index 255 and class k becomes k - 1, so the 150 classes are ids 0..149 and
there is no background class. The raw annotations are reduced when read; when only the
`annotations_detectron2` copy (reduced by detectron2-style preparation scripts) exists, it is
read as is. The ids are the sorted image names of `images/validation`.

Names are the 150-class list open-vocabulary papers prompt with (the first name of each
ADE synonym list, e.g. "windowpane", "television receiver").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.datasets.base import SegDataset
from faseg_rt.io import load_label_png

CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing",
    "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink",
    "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case",
    "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind",
    "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth",
    "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister",
    "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain",
    "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel", "basket",
    "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen",
    "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)

# Second names from ADE's synonym lists (objectInfo150), for parsing candidate strings.
ALIASES: dict[str, str] = {
    "window": "windowpane", "television": "television receiver", "tv": "television receiver",
    "aeroplane": "airplane", "plane": "airplane", "couch": "sofa", "motorbike": "minibike",
    "trash can": "ashcan", "street lamp": "streetlight",
}

IMAGE_DIR = Path("images/validation")
RAW_DIR = Path("annotations/validation")
REDUCED_DIR = Path("annotations_detectron2/validation")


def reduce_zero_label(raw: np.ndarray, source: str = "label") -> np.ndarray:
    """ADE's raw labels (0 = other, 1..150) -> ids 0..149 with 255 = ignore."""
    raw = np.asarray(raw)
    if raw.size and int(raw.max()) > len(CLASSES):
        raise InvalidInputError(f"{source}: label {int(raw.max())} is outside ADE20K-150's 0..150")
    out = raw.astype(np.int16) - 1
    return np.where(out < 0, 255, out).astype(np.uint8)


class ADE20K150(SegDataset):
    """Reader for ADE20K-150 validation; raw annotations are reduced (0 -> 255, k -> k - 1)."""

    name = "ade150"
    class_names = CLASSES
    background = False
    default_threshold = 0.0
    aliases = ALIASES
    root_hint = ("ADEChallengeData2016 (holding images/validation and annotations/validation), "
                 "or the folder holding it")
    root_marker = str(IMAGE_DIR)
    root_levels = ("ADEChallengeData2016",)

    def _read_ids(self) -> list[str]:
        self._require(self.root / IMAGE_DIR)
        if (self.root / RAW_DIR).is_dir():
            self._labels, self._reduce = self.root / RAW_DIR, True
        elif (self.root / REDUCED_DIR).is_dir():
            self._labels, self._reduce = self.root / REDUCED_DIR, False
        else:
            self._require(self.root / RAW_DIR)
        return sorted(p.stem for p in (self.root / IMAGE_DIR).glob("*.jpg"))

    def image_path(self, image_id: str) -> Path:
        return self.root / IMAGE_DIR / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self._labels / f"{image_id}.png"

    def load_label(self, image_id: str) -> np.ndarray:
        path = self.label_path(image_id)
        raw = load_label_png(path)
        return reduce_zero_label(raw, str(path)) if self._reduce else raw
