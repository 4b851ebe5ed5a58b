"""ConfusionMatrix against hand-computed counts: ignore 255, absent classes, whole-split sums."""

import numpy as np
import pytest

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.metrics import ConfusionMatrix, metrics_markdown

# 4 classes; class 3 appears nowhere. gt 255 at (1, 2) is ignored; pred 255 at (1, 3) is a miss.
GT = np.array([[0, 0, 1, 1],
               [2, 2, 255, 1]])
PRED = np.array([[0, 1, 1, 1],
                 [2, 0, 0, 255]])


def test_hand_computed_counts_and_iou():
    cm = ConfusionMatrix(4)
    cm.update(GT, PRED)
    assert cm.matrix.tolist() == [[1, 1, 0, 0],
                                  [0, 2, 0, 0],
                                  [1, 0, 1, 0],
                                  [0, 0, 0, 0]]
    assert cm.gt_pixels.tolist() == [2, 3, 2, 0]       # the pred-255 pixel still counts for gt 1
    assert cm.pred_pixels.tolist() == [2, 3, 1, 0]
    iou = cm.iou()
    # class 0: 1 / (2 + 2 - 1); class 1: 2 / (3 + 3 - 2); class 2: 1 / (2 + 1 - 1); class 3: absent
    np.testing.assert_allclose(iou[:3], [1 / 3, 1 / 2, 1 / 2])
    assert np.isnan(iou[3])
    assert cm.mean_iou() == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 7)

    s = cm.summary(["bg", "a", "b", "c"])
    assert s["mIoU"] == pytest.approx(100 * 4 / 9, abs=1e-3)
    assert s["mIoU_absent_as_zero"] == pytest.approx(100 * (1 / 3 + 1) / 4, abs=1e-3)
    assert s["per_class"] == {"bg": pytest.approx(33.3333), "a": 50.0, "b": 50.0, "c": None}
    assert s["classes_absent"] == ["c"] and s["classes_in_mean"] == 3
    assert "3 of 4" in s["mean_over"]
    assert s["pixels_scored"] == 7
    md = metrics_markdown(s)
    assert "| c | n/a |" in md and "**44.44**" in md


def test_counts_accumulate_over_the_split_not_per_image_means():
    cm = ConfusionMatrix(2)
    cm.update(np.array([[1, 1], [1, 1]]), np.array([[1, 1], [1, 1]]))   # alone: IoU_1 = 1
    cm.update(np.array([[1, 0], [0, 0]]), np.array([[0, 0], [0, 0]]))   # alone: IoU_1 = 0
    # split totals: class 1 TP 4, GT 5, Pred 4 -> 0.8; class 0 TP 3, GT 3, Pred 4 -> 0.75
    np.testing.assert_allclose(cm.iou(), [0.75, 0.8])
    other = ConfusionMatrix(2)
    other.update(np.array([[0]]), np.array([[0]]))
    cm.merge(other)
    np.testing.assert_allclose(cm.iou(), [0.8, 0.8])


def test_matches_a_naive_loop_on_random_maps():
    rng = np.random.default_rng(0)
    n = 5
    cm = ConfusionMatrix(n)
    tp, gt_n, pr_n = np.zeros(n), np.zeros(n), np.zeros(n)
    for _ in range(3):
        g = rng.integers(0, n, (7, 9))
        g[rng.random(g.shape) < 0.2] = 255
        p = rng.integers(0, n, (7, 9))
        cm.update(g, p)
        for y in range(7):
            for x in range(9):
                if g[y, x] == 255:
                    continue
                gt_n[g[y, x]] += 1
                pr_n[p[y, x]] += 1
                tp[g[y, x]] += g[y, x] == p[y, x]
    np.testing.assert_allclose(cm.iou(), tp / (gt_n + pr_n - tp))


def test_all_ignored_and_bad_inputs():
    cm = ConfusionMatrix(3)
    cm.update(np.full((2, 2), 255), np.zeros((2, 2)))
    assert np.isnan(cm.iou()).all()
    assert cm.summary(["a", "b", "c"])["mIoU"] is None
    with pytest.raises(InvalidInputError, match="label 7"):
        cm.update(np.array([[7]]), np.array([[0]]))
    with pytest.raises(InvalidInputError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(InvalidInputError):
        cm.summary(["a"])
