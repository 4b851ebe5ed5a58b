"""The one place that knows every dataset reader: names to classes, `open_dataset`."""

from __future__ import annotations

import os

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.datasets.ade20k import ADE20K150
from faseg_rt.eval.datasets.ade20k_full import ADE20K847
from faseg_rt.eval.datasets.base import SegDataset
from faseg_rt.eval.datasets.coco_object import COCOObject
from faseg_rt.eval.datasets.coco_stuff import COCOStuff171
from faseg_rt.eval.datasets.context import PascalContext
from faseg_rt.eval.datasets.context459 import PascalContext459
from faseg_rt.eval.datasets.toy import ToyDataset
from faseg_rt.eval.datasets.voc import PascalVOC

# The paper's three datasets, the open-vocabulary benchmark suite, then the generated toy world.
READERS: tuple[type[SegDataset], ...] = (PascalVOC, PascalContext, COCOObject, ADE20K150,
                                         ADE20K847, PascalContext459, COCOStuff171, ToyDataset)


def _registry() -> dict[str, type[SegDataset]]:
    return {c.name: c for c in READERS}


DATASETS = tuple(c.name for c in READERS)


def open_dataset(name: str, root: str | os.PathLike | None = None, **options) -> SegDataset:
    """Open dataset `name` (one of DATASETS, e.g. "voc" or "ade847") whose files lie under `root`.

    A generated split ("toy") may be opened without a root (it is written to a cache folder) and
    takes `options` (toy: split, count, size); the file-based benchmarks need a root and take none.
    """
    reg = _registry()
    if name not in reg:
        raise InvalidInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    reader = reg[name]
    if not reader.generated:
        if root is None:
            raise InvalidInputError(f"{name}: a root folder is required; point it at {reader.root_hint}")
        if options:
            raise InvalidInputError(f"{name} takes no options ({', '.join(sorted(options))} given)")
    return reader(root, **options)
