"""Semantic-segmentation scoring: one confusion matrix accumulated over a whole split.

The published protocol: counts are summed over all images (not per-image means), pixels whose
ground truth is 255 are ignored, IoU_i = TP_i / (GT_i + Pred_i - TP_i), and mIoU is the mean over
all classes of the dataset including background. On a full split every class occurs. On a small
subset some classes may be absent from both ground truth and prediction; their IoU is undefined
(reported as None) and they are left out of the mean, which is then the mean over the classes
present in ground truth or prediction. `mIoU_absent_as_zero` gives the published scripts' number
for such subsets (they add 1e-10 to the union, so an absent class scores 0 and still counts).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from faseg_rt.errors import InvalidInputError


class ConfusionMatrix:
    """Pixel counts: row = ground-truth class, column = predicted class.

    A prediction outside 0..num_classes-1 (e.g. 255 in a foreign mask) counts as predicting no
    class: the pixel adds to its ground-truth class's total (a miss) and to no prediction total,
    as in the published scripts. Ground truth outside 0..num_classes-1 other than the ignore
    index is a data error and raises.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if num_classes < 1:
            raise InvalidInputError("num_classes must be >= 1")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        # extra last column: predictions that are not a class id
        self._counts = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one image: `gt` and `pred` are integer arrays of the same shape."""
        gt = np.asarray(gt)
        pred = np.asarray(pred)
        if gt.shape != pred.shape:
            raise InvalidInputError(f"prediction shape {pred.shape} != ground truth {gt.shape}")
        n = self.num_classes
        valid = gt != self.ignore_index
        g = gt[valid].astype(np.int64)
        if g.size and (g.min() < 0 or g.max() >= n):
            bad = g[(g < 0) | (g >= n)][0]
            raise InvalidInputError(f"ground truth holds label {bad}, outside 0..{n - 1} and not "
                                    f"the ignore index {self.ignore_index}")
        p = pred[valid].astype(np.int64)
        p = np.where((p >= 0) & (p < n), p, n)
        self._counts += np.bincount(g * (n + 1) + p, minlength=n * (n + 1)).reshape(n, n + 1)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another matrix's counts (e.g. from a parallel worker)."""
        if other.num_classes != self.num_classes:
            raise InvalidInputError("cannot merge confusion matrices of different sizes")
        self._counts += other._counts

    @property
    def matrix(self) -> np.ndarray:
        """(n, n) counts over pixels whose prediction is a class id."""
        return self._counts[:, : self.num_classes].copy()

    @property
    def gt_pixels(self) -> np.ndarray:
        return self._counts.sum(axis=1)

    @property
    def pred_pixels(self) -> np.ndarray:
        return self._counts[:, : self.num_classes].sum(axis=0)

    @property
    def true_positives(self) -> np.ndarray:
        return np.diagonal(self._counts).copy()

    def iou(self) -> np.ndarray:
        """Per-class IoU in [0, 1]; NaN for a class absent from both ground truth and prediction."""
        tp = self.true_positives.astype(np.float64)
        union = self.gt_pixels + self.pred_pixels - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def mean_iou(self) -> float:
        """Mean IoU over classes present in ground truth or prediction (NaN if none)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if (~np.isnan(iou)).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.gt_pixels.sum()
        return float(self.true_positives.sum() / total) if total else float("nan")

    def summary(self, class_names: Sequence[str]) -> dict:
        """Metrics in percent as a JSON-ready dict (None for undefined values)."""
        if len(class_names) != self.num_classes:
            raise InvalidInputError("need one class name per class")
        iou = self.iou()
        present = ~np.isnan(iou)
        absent = [name for name, ok in zip(class_names, present) if not ok]

        def pct(v: float):
            return None if np.isnan(v) else round(100.0 * float(v), 4)

        if absent:
            mean_over = (f"the {int(present.sum())} of {self.num_classes} classes present in ground "
                         "truth or prediction; absent classes (per_class null) are left out")
        else:
            mean_over = f"all {self.num_classes} classes (background included)"
        return {
            "mIoU": pct(self.mean_iou()),
            "mIoU_absent_as_zero": pct(float(np.nan_to_num(iou).mean())),
            "per_class": {name: pct(v) for name, v in zip(class_names, iou)},
            "mean_over": mean_over,
            "classes_in_mean": int(present.sum()),
            "classes_absent": absent,
            "num_classes": self.num_classes,
            "pixel_accuracy": pct(self.pixel_accuracy()),
            "pixels_scored": int(self.gt_pixels.sum()),
            "ignore_index": self.ignore_index,
        }


def metrics_markdown(metrics: dict) -> str:
    """The per-class IoU table and mIoU of a `summary` dict, as markdown."""
    lines = ["| class | IoU (%) |", "|---|---:|"]
    for name, v in metrics["per_class"].items():
        lines.append(f"| {name} | {'n/a' if v is None else f'{v:.2f}'} |")
    m = metrics["mIoU"]
    lines.append(f"| **mIoU** | **{'n/a' if m is None else f'{m:.2f}'}** |")
    return "\n".join(lines) + f"\n\nmIoU over {metrics['mean_over']}."
