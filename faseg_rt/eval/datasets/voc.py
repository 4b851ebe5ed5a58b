"""PASCAL VOC 2012 segmentation, val split (1449 images): 20 classes + background.

Layout (`--root` points at `VOCdevkit/VOC2012`):
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png          palette PNG, pixel value = class id, 255 = boundary/ignore
    ImageSets/Segmentation/val.txt      one id per line
"""

from __future__ import annotations

from pathlib import Path

from faseg_rt.eval.datasets.base import SegDataset, read_split_file

# Class ids 0..20 in the order of the VOC devkit; the three two-word names are spelled with a
# space, as in FA-Seg's prompts and candidate strings ("diningtable" etc. are aliases).
CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "dining table", "dog", "horse", "motorbike", "person", "potted plant",
    "sheep", "sofa", "train", "tv monitor",
)

# Published background threshold for VOC (published evaluation scripts).
THRESHOLD = 0.55

# Other spellings -> canonical name: devkit names without spaces, and the CLIP word-piece
# respelling the published class list uses for "aeroplane".
ALIASES: dict[str, str] = {
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor",
    "aerop lane": "aeroplane",
}


class PascalVOC(SegDataset):
    """Reader for VOC2012 val; ground truth is read as palette indices."""

    name = "voc"
    class_names = CLASSES
    default_threshold = THRESHOLD
    aliases = ALIASES
    root_hint = "VOCdevkit/VOC2012 (holding JPEGImages, SegmentationClass, ImageSets/Segmentation)"
    split_file = Path("ImageSets/Segmentation/val.txt")
    root_marker = str(split_file)
    root_levels = ("VOC2012", "VOCdevkit/VOC2012")

    def _read_ids(self) -> list[str]:
        self._require(self.root / "JPEGImages", self.root / "SegmentationClass",
                      self.root / self.split_file)
        return read_split_file(self.root / self.split_file)

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / "SegmentationClass" / f"{image_id}.png"
