"""The common interface of the evaluation datasets (the registry that opens them: registry.py).

Each dataset module (`voc.py`, `context.py`, `coco_object.py`, `ade20k.py`, ...) holds its facts
in one place: the class list, whether class 0 is background, the ignore label, the default
background threshold, spelling aliases seen in candidate strings, and where files live under
`--root`. This module only states what every reader offers, so the evaluation loop never
branches on which dataset it scores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np
from PIL import Image

from faseg_rt.errors import InvalidInputError
from faseg_rt.io import load_label_png

IGNORE_INDEX = 255


class SegDataset:
    """A read-only view of one validation split: ids, image paths and ground-truth label maps.

    Subclasses set the class-level facts and implement `_read_ids`, `image_path`, `label_path`
    (and `load_label` when the ground truth is not a plain index PNG).

    Attributes:
        name: the dataset's CLI name ("voc", "context", "coco-object", "ade150", ...).
        class_names: all class names (21 / 60 / 81 / 150 / 171 / 459 / 847 entries).
        background: True when class 0 is "background" (VOC, Context-59, COCO-Object): FA-Seg's
            below-threshold label maps to it. False for benchmarks without one (ADE20K,
            COCO-Stuff, Context-459): every class is a candidate, and a below-threshold pixel is
            predicted as `ignore_index`, which scores as "no class" (a miss).
        ignore_index: the ground-truth label that is not scored (255, or 65535 in 16-bit sets).
        default_threshold: the published background threshold (0 where there is no background).
        aliases: other spellings (lower case) -> canonical class name, used when parsing
            candidate strings (e.g. "tvmonitor" or the word-piece respelling "aerop lane").
        root_hint: which directory `--root` must point at, for error messages and docs.
        root_marker: a path (relative to the root) whose presence identifies the root.
        root_levels: where the root may lie below the folder a user passes, nearest first, so
            `--root` may name any of the usual levels (VOC: the folder holding VOCdevkit,
            VOCdevkit, or VOC2012, as torchvision and mmsegmentation configs do).
        root_note: after opening, one line saying which folder was used (for the CLI).
        split: the split the reader serves ("val" for every benchmark; metrics.json records it).
        generated: True for a split the reader writes itself (the toy world): it may be opened
            without a root (it then uses a cache folder), and takes options (split, count).
    """

    name: ClassVar[str] = ""
    class_names: ClassVar[tuple[str, ...]] = ()
    background: ClassVar[bool] = True
    ignore_index: ClassVar[int] = IGNORE_INDEX
    default_threshold: ClassVar[float] = 0.55
    aliases: ClassVar[Mapping[str, str]] = {}
    root_hint: ClassVar[str] = ""
    root_marker: ClassVar[str] = ""
    root_levels: ClassVar[tuple[str, ...]] = ()
    split: ClassVar[str] = "val"
    generated: ClassVar[bool] = False

    def __init__(self, root: str | os.PathLike):
        given = Path(root)
        if not given.is_dir():
            raise InvalidInputError(f"{self.name}: the root {given} is not a directory; "
                                    f"point it at {self.root_hint}")
        self.root = self.find_root(given)
        self.root_note = (f"{self.name}: using {self.root}" if self.root == given else
                          f"{self.name}: using {self.root} (found under the root {given})")
        self._ids = self._read_ids()
        self._index = {n.lower(): i for i, n in enumerate(self.class_names)}

    # --- what subclasses provide -------------------------------------------------------------
    def _read_ids(self) -> list[str]:
        raise NotImplementedError

    def image_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def label_path(self, image_id: str) -> Path:
        raise NotImplementedError

    def load_label(self, image_id: str) -> np.ndarray:
        """Ground truth as an (H, W) uint8 (uint16 for 16-bit sets) array: class ids
        0..num_classes-1, `ignore_index` = not scored."""
        return load_label_png(self.label_path(image_id))

    @property
    def captions_file(self) -> Path | None:
        """The JSON file (image id -> caption) of the captions the dataset ships, None when it
        ships none (every benchmark here: their captions are published separately)."""
        return None

    # --- shared ------------------------------------------------------------------------------
    @classmethod
    def find_root(cls, given: Path) -> Path:
        """The first of `given`, `given/level` for each of `root_levels` that holds `root_marker`
        (`given` itself when none does: the reader then says what is missing there)."""
        for level in ("", *cls.root_levels):
            candidate = given / level if level else given
            if not cls.root_marker or (candidate / cls.root_marker).exists():
                return candidate
        return given

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def no_class_label(self) -> int:
        """The saved prediction for FA-Seg's below-threshold label 0: background's id, or
        `ignore_index` (scored as "no class") where the benchmark has no background."""
        return 0 if self.background else self.ignore_index

    @property
    def ids(self) -> list[str]:
        """The split's image ids in a fixed order (split file order, or sorted names)."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(height, width) of the image, read from its header only."""
        with Image.open(self.image_path(image_id)) as im:
            return im.height, im.width

    def class_id(self, name: str) -> int:
        """The dataset id of a class name (canonical or alias, any case); KeyError if unknown."""
        key = " ".join(name.lower().split())
        key = self.aliases.get(key, key).lower()
        return self._index[key]

    def _require(self, *paths: Path) -> None:
        for p in paths:
            if not p.exists():
                levels = "".join(f", or a folder holding {lv}" for lv in self.root_levels)
                raise InvalidInputError(
                    f"{self.name}: {p} not found; the root must point at {self.root_hint}{levels}")


def read_split_file(path: Path) -> list[str]:
    """Ids listed one per line (blank lines skipped), as in VOC's ImageSets files."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]
