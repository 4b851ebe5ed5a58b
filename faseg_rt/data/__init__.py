"""Dataset readers, official per-image inputs, mIoU and the evaluation loop.

`open_dataset("voc" | "context" | "coco-object", root)` returns a reader with a common interface
(`faseg_rt.data.base.SegDataset`); `faseg_rt.data.evaluate.evaluate` runs a segmenter over it.
"""

from faseg_rt.data.base import DATASETS, SegDataset, open_dataset
from faseg_rt.data.metrics import ConfusionMatrix

__all__ = ["DATASETS", "SegDataset", "open_dataset", "ConfusionMatrix"]
