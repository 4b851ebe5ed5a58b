"""TTF, test-time flipping (spec step 7), thresholding and labels (spec step 8)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


def ttf(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(2B, K, s, s) maps of [image, mirror] pairs -> (B, K, size, size) flip-fused scores.

    Bicubic upsampling to size x size, the mirror's maps flipped back, the two averaged.
    """
    n, k = maps.shape[:2]
    up = F.interpolate(maps, size=(size, size), mode="bicubic", align_corners=False)
    up = up.reshape(n // 2, 2, k, size, size)
    return (up[:, 0] + up[:, 1].flip(-1)) / 2


def labels_from_scores(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, K, H, W) -> (B, H, W) int64: 0 where max_k < threshold, else argmax_k + 1."""
    best, idx = scores.max(dim=1)
    return torch.where(best < threshold, torch.zeros_like(idx), idx + 1)


@lru_cache(maxsize=256)
def pil_nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel in PIL's NEAREST resize of n_in -> n_out pixels.

    PIL samples pixel centres with a running float64 sum (x = scale / 2, then x += scale per
    pixel) and truncates; torch's "nearest-exact" computes (i + 0.5) * scale directly, which
    differs where the sum lands just below an integer.  Reproduced here so labels match PIL.
    """
    scale = n_in / n_out
    steps = np.full(n_out, scale, dtype=np.float64)
    steps[0] = scale * 0.5
    return np.minimum(np.add.accumulate(steps).astype(np.int64), n_in - 1)


def resize_labels(labels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour resize of an (H0, W0) label map, identical to PIL's NEAREST."""
    if labels.shape == (height, width):
        return labels
    rows = torch.from_numpy(pil_nearest_indices(labels.shape[0], height)).to(labels.device)
    cols = torch.from_numpy(pil_nearest_indices(labels.shape[1], width)).to(labels.device)
    return labels.index_select(0, rows).index_select(1, cols)
