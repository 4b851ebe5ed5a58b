"""The one place that knows every dataset reader: names to classes, `open_dataset`."""

from __future__ import annotations

import os

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.datasets.base import SegDataset
from faseg_rt.eval.datasets.coco_object import COCOObject
from faseg_rt.eval.datasets.context import PascalContext
from faseg_rt.eval.datasets.voc import PascalVOC


def _registry() -> dict[str, type[SegDataset]]:
    return {c.name: c for c in (PascalVOC, PascalContext, COCOObject)}


DATASETS = ("voc", "context", "coco-object")


def open_dataset(name: str, root: str | os.PathLike) -> SegDataset:
    """Open dataset `name` ("voc", "context" or "coco-object") whose files lie under `root`."""
    reg = _registry()
    if name not in reg:
        raise InvalidInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return reg[name](root)
