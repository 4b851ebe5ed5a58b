"""The synthetic toy world (toy_world.py) as an evaluation dataset: a generated split, not a
downloaded one, so `faseg-rt eval --dataset toy` scores FA-Seg on exact ground truth with the
same loop, mIoU and class-presence code as VOC.

A split is `count` pictures of ToyWorld(size) drawn with a fixed seed: "val" uses 1000 (the
validation seed faseg_rt/testing/toy_eval.py scores), "train" uses 0 (the trainer's).  On first
open it is written into the root:

    images/<id>.png     RGB, size x size
    labels/<id>.png     palette index PNG, (size, size): 0 background, k + 1 for NAMES[k]
    captions.json       {id: caption}: what `--captions dataset` reads
    split.json          {format, split, seed, count, world: ToyWorld's fields}

Ids are "<split>_<index:05d>" ("val_00007" is ToyWorld(size).sample(1000, 7)), so masks of two
splits never share a name in one output folder.  The folder is written next to the root under a
temporary name and renamed into place, so a crash or Ctrl-C never leaves a half-written split;
a later open reuses it while split.json matches, and writes it again when it does not (another
count, size or generator format).  Without a root the split goes to the cache folder
($FASEG_RT_CACHE_DIR, else $XDG_CACHE_HOME/faseg_rt or ~/.cache/faseg_rt) / toy/<split>-<size>-<count>.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
from pathlib import Path

from faseg_rt import rules
from faseg_rt.engines.file_hash import cache_dir
from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.datasets.base import SegDataset
from faseg_rt.eval.datasets.toy_world import NAMES, ToyWorld
from faseg_rt.io import atomic_write_json, save_label_png

#: split name -> the seed its pictures are drawn with.
SPLIT_SEEDS = {"val": 1000, "train": 0}
SIZE = 128
COUNT = 300
#: Bump when the files written for a split change (layout, id form, generator): old folders
#: then no longer match and are written again.
FORMAT = 2
CAPTIONS = "captions.json"
SPEC = "split.json"


def image_id(split: str, index: int) -> str:
    """The id of picture `index` of `split`: "val_00007"."""
    return f"{split}_{index:05d}"


def default_root(split: str = "val", size: int = SIZE, count: int = COUNT) -> Path:
    """The cache folder a split goes to when no root is given: <cache>/toy/<split>-<size>-<count>."""
    return cache_dir() / "toy" / f"{split}-{size}-{count}"


def split_spec(split: str, count: int, world: ToyWorld) -> dict:
    """What split.json says of a split (compared as a whole to decide whether to reuse it)."""
    return {"format": FORMAT, "split": split, "seed": SPLIT_SEEDS[split], "count": count,
            "world": dataclasses.asdict(world)}


def read_spec(root: Path) -> dict | None:
    """split.json of `root`, None when missing or unreadable (then the split is written again)."""
    try:
        return json.loads((root / SPEC).read_text())
    except (OSError, ValueError):
        return None


def write_split(folder: Path, spec: dict, world: ToyWorld) -> None:
    """Draw the pictures of `spec` and write images/, labels/, captions.json and, last, split.json
    into `folder` (an empty folder)."""
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    captions = {}
    for index in range(spec["count"]):
        sample = world.sample(spec["seed"], index)
        name = image_id(spec["split"], index)
        sample.image.save(folder / "images" / f"{name}.png")
        save_label_png(sample.mask, folder / "labels" / f"{name}.png")
        captions[name] = sample.caption
    atomic_write_json(folder / CAPTIONS, captions)
    atomic_write_json(folder / SPEC, spec)


def _sibling(root: Path, kind: str) -> Path:
    """A fresh hidden name next to `root` (".val-128-300.<pid>.<random>.tmp")."""
    return root.parent / f".{root.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}"


def materialise(root: Path, spec: dict, world: ToyWorld) -> bool:
    """Make `root` hold the split `spec`; True when it was written now, False when reused.

    The split is written into a temporary folder beside `root` and renamed onto it; a folder
    already there (an older split, or an empty folder the user made) is renamed away first and
    then removed.  A folder with other files and no split.json is refused rather than replaced.
    An exception while writing removes the temporary folder: `root` is left as it was.
    """
    if read_spec(root) == spec:
        return False
    if root.exists() and not root.is_dir():
        raise InvalidInputError(f"toy: the root {root} is not a directory")
    if root.is_dir() and not (root / SPEC).exists() and any(root.iterdir()):
        raise InvalidInputError(f"toy: {root} holds other files and no {SPEC}; point the root at "
                                "an empty or new folder to generate the split in")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _sibling(root, "tmp"), None
    try:
        tmp.mkdir()
        write_split(tmp, spec, world)
        if read_spec(root) == spec:      # another process put the same split there meanwhile
            return False
        if root.exists():
            old = _sibling(root, "old")
            os.replace(root, old)
        os.replace(tmp, root)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return True


class ToyDataset(SegDataset):
    """Reader of a generated toy split (the module docstring has the layout).

    Args:
        root: the folder the split is written into (made if missing); None: `default_root`.
        split: "val" (seed 1000) or "train" (seed 0).
        count: pictures in the split (ids `image_id(split, 0..count-1)`).
        size: picture side in pixels.
    """

    name = "toy"
    class_names = ("background",) + NAMES
    background = True
    default_threshold = 0.55
    root_hint = "a folder to generate the toy split in (made if missing)"
    generated = True

    def __init__(self, root: str | os.PathLike | None = None, split: str = "val", count: int = COUNT,
                 size: int = SIZE):
        if split not in SPLIT_SEEDS:
            raise InvalidInputError(f"toy: split must be one of {', '.join(SPLIT_SEEDS)}, not {split!r}")
        self.split = split
        self.count = rules.positive_int(count, "toy count")
        self.world = ToyWorld(size=rules.positive_int(size, "toy size"))
        self.spec = split_spec(split, self.count, self.world)
        path = Path(root) if root is not None else default_root(split, size, self.count)
        self.written = materialise(path, self.spec, self.world)
        super().__init__(path)
        done = "wrote" if self.written else "using"
        self.root_note = (f"toy: {done} {self.count} pictures of the {split} split "
                          f"(seed {self.spec['seed']}, {size} px) in {self.root}")

    def _read_ids(self) -> list[str]:
        self._require(self.root / "images", self.root / "labels", self.root / CAPTIONS)
        return [image_id(self.split, i) for i in range(self.count)]

    def image_path(self, image_id: str) -> Path:
        return self.root / "images" / f"{image_id}.png"

    def label_path(self, image_id: str) -> Path:
        return self.root / "labels" / f"{image_id}.png"

    @property
    def captions_file(self) -> Path:
        """captions.json: id -> the caption the picture was drawn with."""
        return self.root / CAPTIONS
