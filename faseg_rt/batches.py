"""How `Segmenter.segment_batch` splits a call's images: network batches and HARD groups.

Batch-invariant (the default): every image is its own network batch, so the networks, HARD and
TTF see exactly the tensors a single call gives them and the answer is byte-identical to it
whatever else is in the call.  Shared: `batch_size` images per network pass (the matrix
products' blocking then depends on the batch, so a few scores round differently; the measured
disagreement is in benchmarks/README.md, "Serving").
"""

from __future__ import annotations

from typing import Sequence

import torch

from faseg_rt.errors import InvalidInputError


def network_batches(n: int, batch_size: int, invariant: bool) -> list[slice]:
    """The slices of n images that go through the networks together: one image each when
    invariant, else batch_size at a time."""
    step = 1 if invariant else batch_size
    return [slice(start, start + step) for start in range(0, n, step)]


def pad_chunks(chunks: torch.Tensor, n: int) -> torch.Tensor:
    """Pad (J, 77, D) to (n, 77, D) by repeating the last chunk (its maps get zero weight)."""
    if chunks.shape[0] == n:
        return chunks
    return torch.cat([chunks, chunks[-1:].expand(n - chunks.shape[0], -1, -1)])


def per_image_classes(classes, n: int) -> list:
    """One class list per image: `classes` itself when it is a list of lists (one per image),
    else the same list n times."""
    if isinstance(classes, (list, tuple)) and classes and all(isinstance(c, (list, tuple)) for c in classes):
        if len(classes) != n:
            raise InvalidInputError(f"got {len(classes)} per-image class lists for {n} images")
        return list(classes)
    return [classes] * n


def groups(texts: Sequence) -> list[list[int]]:
    """Indices of images grouped by identical class list (HARD batches over a shared K)."""
    out: dict[tuple, list[int]] = {}
    for i, t in enumerate(texts):
        out.setdefault(t.prompts.classes, []).append(i)
    return list(out.values())


def contiguous(idx: list[int]) -> bool:
    return idx == list(range(idx[0], idx[-1] + 1))
