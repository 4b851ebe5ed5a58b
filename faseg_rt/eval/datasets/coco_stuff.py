"""COCO-Stuff-171: the 5000 COCO val2017 images with 80 thing + 91 stuff classes.

Layout (`--root` points at the COCO-Stuff folder, e.g. `coco_stuff164k`, or the folder holding
`coco_stuff164k`, `coco-stuff` or `coco`), with the images and one of three label forms:
    images/val2017/<id>.jpg
    annotations_detectron2/val2017/<id>.png     train ids 0..170, 255 = unlabelled, or
    annotations/val2017/<id>_labelTrainIds.png  the same ids (mmsegmentation's conversion), or
    annotations/val2017/<id>.png                the released stuffthingmaps: COCO category id - 1
                                                (0..181 with gaps), 255 = unlabelled
Used in that order of preference. Released maps are converted with `RAW_TO_TRAIN`: the 80 thing
categories, then the 91 stuff categories (raw 91..181), each in id order; 11 COCO ids have no
category, so a raw value outside those is an error. There is no background class: every pixel
is a thing, a stuff class, or unlabelled. The ids are the sorted image names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.datasets.base import SegDataset
from faseg_rt.io import load_label_png

CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "branch", "bridge",
    "building-other", "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other",
    "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss",
    "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other", "plastic",
    "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug",
    "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree",
    "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel", "wall-stone",
    "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)

# COCO category ids (1-based) of the 80 things; stuff classes are ids 92..182.
THING_IDS = (tuple(range(1, 12)) + tuple(range(13, 26)) + (27, 28) + tuple(range(31, 45))
             + tuple(range(46, 66)) + (67, 70) + tuple(range(72, 83)) + tuple(range(84, 91)))
STUFF_IDS = tuple(range(92, 183))
UNMAPPED = 254  # marks raw values that are no COCO-Stuff category


def _raw_to_train() -> np.ndarray:
    lut = np.full(256, UNMAPPED, dtype=np.uint8)
    for train_id, coco_id in enumerate(THING_IDS + STUFF_IDS):
        lut[coco_id - 1] = train_id
    lut[255] = 255
    return lut


# stuffthingmaps value (COCO id - 1, or 255) -> train id 0..170 (255 = unlabelled).
RAW_TO_TRAIN: np.ndarray = _raw_to_train()

ALIASES: dict[str, str] = {
    "television": "tv", "tv monitor": "tv", "aeroplane": "airplane", "motorbike": "motorcycle",
    "sofa": "couch", "pottedplant": "potted plant",
}

IMAGE_DIR = Path("images/val2017")
LABEL_FORMS = (  # (directory, file suffix, raw stuffthingmaps?)
    (Path("annotations_detectron2/val2017"), ".png", False),
    (Path("annotations/val2017"), "_labelTrainIds.png", False),
    (Path("annotations/val2017"), ".png", True),
)


class COCOStuff171(SegDataset):
    """Reader for COCO-Stuff-171 val2017 (train-id PNGs, or released maps converted)."""

    name = "coco-stuff"
    class_names = CLASSES
    background = False
    default_threshold = 0.0
    aliases = ALIASES
    root_hint = ("coco_stuff164k (holding images/val2017 and annotations/val2017 or "
                 "annotations_detectron2/val2017)")
    root_marker = str(IMAGE_DIR)
    root_levels = ("coco_stuff164k", "coco-stuff", "coco")

    def _read_ids(self) -> list[str]:
        self._require(self.root / IMAGE_DIR)
        ids = sorted(p.stem for p in (self.root / IMAGE_DIR).glob("*.jpg"))
        for folder, suffix, raw in LABEL_FORMS:
            if (self.root / folder).is_dir() and (
                    not ids or (self.root / folder / f"{ids[0]}{suffix}").exists()):
                self._labels, self._suffix, self._raw = self.root / folder, suffix, raw
                break
        else:
            self._require(self.root / LABEL_FORMS[2][0])
        return ids

    def image_path(self, image_id: str) -> Path:
        return self.root / IMAGE_DIR / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self._labels / f"{image_id}{self._suffix}"

    def load_label(self, image_id: str) -> np.ndarray:
        path = self.label_path(image_id)
        lab = load_label_png(path)
        if not self._raw:
            return lab
        out = RAW_TO_TRAIN[lab]
        if (out == UNMAPPED).any():
            bad = int(lab[out == UNMAPPED][0])
            raise InvalidInputError(f"{path}: value {bad} is no COCO-Stuff category (COCO id - 1)")
        return out
