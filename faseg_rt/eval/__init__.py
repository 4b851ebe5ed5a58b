"""Dataset readers, official per-image inputs, mIoU and the evaluation loop.

`open_dataset("voc" | "context" | "coco-object", root)` returns a reader with a common interface
(`faseg_rt.eval.datasets.base.SegDataset`); `faseg_rt.eval.loop.evaluate` runs a segmenter over it.
"""

from faseg_rt.eval.datasets.base import SegDataset
from faseg_rt.eval.datasets.registry import DATASETS, open_dataset
from faseg_rt.eval.metrics import ConfusionMatrix

__all__ = ["DATASETS", "SegDataset", "open_dataset", "ConfusionMatrix"]
