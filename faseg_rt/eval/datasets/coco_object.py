"""COCO-Object: the 5000 COCO val2017 images, labels = COCO-Stuff164k converted to objects.

Layout (`--root` points at `coco_stuff164k`):
    images/val2017/<id>.jpg
    annotation_object/val2017/<id>.png     gray PNG: 1..80 = things in COCO-80 order,
                                           0 = stuff/background, 255 = unlabeled
(some releases name the annotation directory `annotation_object_p`; both are accepted, the
first one found in that order is used). There is no split file: the ids are the sorted names
of the images in `images/val2017`.
"""

from __future__ import annotations

from pathlib import Path

from faseg_rt.eval.datasets.base import SegDataset

# COCO-80 ("things") in the standard order, ids 1..80; 0 = background.
CLASSES: tuple[str, ...] = (
    "background",
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

# Published background threshold for COCO-Object.
THRESHOLD = 0.60

# CLIP word-piece respellings of the published class list, the published ground-truth lists'
# VOC-style names ("sofa", "diningtable", "pottedplant") and other common spellings.
ALIASES: dict[str, str] = {
    "fire hydr ant": "fire hydrant",
    "surf board": "surfboard",
    "sofa": "couch", "diningtable": "dining table", "pottedplant": "potted plant",
    "television": "tv", "tv monitor": "tv", "tvmonitor": "tv", "aeroplane": "airplane",
    "motorbike": "motorcycle",
}

ANNOTATION_DIRS = ("annotation_object", "annotation_object_p")


class COCOObject(SegDataset):
    """Reader for COCO-Object val2017 (gray index PNGs)."""

    name = "coco-object"
    class_names = CLASSES
    default_threshold = THRESHOLD
    aliases = ALIASES
    root_hint = ("coco_stuff164k (holding images/val2017 and annotation_object/val2017 "
                 "or annotation_object_p/val2017)")
    root_marker = "images/val2017"
    root_levels = ("coco_stuff164k",)

    def _read_ids(self) -> list[str]:
        images = self.root / "images" / "val2017"
        self._require(images)
        for d in ANNOTATION_DIRS:
            if (self.root / d / "val2017").is_dir():
                self.annotation_dir = self.root / d / "val2017"
                break
        else:
            self._require(self.root / ANNOTATION_DIRS[0] / "val2017")
        return sorted(p.stem for p in images.glob("*.jpg"))

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / "val2017" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.annotation_dir / f"{image_id}.png"
