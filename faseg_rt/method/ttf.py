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


#: Bytes of upsampled maps `ttf_labels` holds at once (per call, all images of the batch).
TTF_CHUNK_BYTES = 64 * 2**20


def ttf_chunk_classes(n_images: int, size: int, itemsize: int = 4) -> int:
    """Classes per TTF chunk so that one chunk's maps fit in TTF_CHUNK_BYTES.

    One chunk holds, per image and class, the two upsampled halves and their average:
    3 * size^2 values.
    """
    return max(1, TTF_CHUNK_BYTES // (3 * n_images * size * size * itemsize))


def ttf_labels(maps: torch.Tensor, size: int, threshold: float,
               chunk_classes: int | None = None) -> torch.Tensor:
    """Labels of `labels_from_scores(ttf(maps, size), threshold)` without the (B, K, size, size)
    scores: TTF runs on `chunk_classes` classes at a time and a running max / argmax is kept.

    Bit-identical to the unchunked path: each class's upsampled map does not depend on the
    other classes, and a later chunk replaces the running best only where it is strictly
    greater, so ties go to the lowest class index as torch.max does within a chunk.
    maps: (2B, K, s, s) [image, mirror] pairs.  Returns (B, size, size) int64.
    """
    n, k = maps.shape[:2]
    chunk = chunk_classes or ttf_chunk_classes(n // 2, size, maps.element_size())
    best = arg = None
    for k0 in range(0, k, chunk):
        b, i = ttf(maps[:, k0:k0 + chunk], size).max(dim=1)                    # (B, size, size)
        if best is None:
            best, arg = b, i
        else:
            better = b > best
            best = torch.where(better, b, best)
            arg = torch.where(better, i + k0, arg)
    return torch.where(best < threshold, torch.zeros_like(arg), arg + 1)


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
