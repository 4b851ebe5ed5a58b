"""Per-stage timing of the real code path, for benchmarks: off (a no-op) unless recording.

    with record() as times:
        seg(image, classes)
    times.ms  # {"vae_encoder": 12.3, "unet_inversion": ..., ...}

A context variable holds the active recorder, so concurrent calls in other threads are not
timed into it.  On CUDA each stage synchronises before and after (only while recording).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from contextvars import ContextVar
from typing import Iterator

import torch

_active: ContextVar["StageTimes | None"] = ContextVar("faseg_stage_times", default=None)


class StageTimes:
    def __init__(self):
        self.ms: dict[str, float] = defaultdict(float)


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def stage(name: str, device=None) -> Iterator[None]:
    times = _active.get()
    if times is None:
        yield
        return
    _sync(device)
    t0 = time.perf_counter()
    yield
    _sync(device)
    times.ms[name] += (time.perf_counter() - t0) * 1e3


@contextlib.contextmanager
def record() -> Iterator[StageTimes]:
    times = StageTimes()
    token = _active.set(times)
    try:
        yield times
    finally:
        _active.reset(token)
