"""Run one dynamic batch of checked requests through `Segmenter.segment_batch`.

The requests Ray Serve gathered (up to max_batch_size within batch_wait_ms) are grouped by
vocabulary and threshold: one segment_batch call per group, so the text-embedding cache and
HARD's shared-K batching apply, and every image of a call uses the threshold it asked for.
Each request's answer is what a single `Segmenter.__call__` gives (segment_batch is exact per
image); a group the package refuses is retried request by request, so one bad request gets its
own error and the others their answers.  Nothing is raised: each slot holds an Answer or the
exception of that request.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Sequence

from faseg_rt.errors import InvalidInputError
from faseg_rt.serve.request import Answer, SegmentRequest, answer


class BatchStats:
    """Counts of what this replica ran (GET /v1/stats): how many batches, of which sizes."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sizes: Counter = Counter()
        self._calls = 0

    def record(self, batch_size: int, calls: int) -> None:
        with self._lock:
            self._sizes[batch_size] += 1
            self._calls += calls

    def snapshot(self) -> dict:
        with self._lock:
            sizes = dict(sorted(self._sizes.items()))
            return {"batches": sum(sizes.values()), "requests": sum(k * v for k, v in sizes.items()),
                    "largest_batch": max(sizes, default=0), "segment_batch_calls": self._calls,
                    "batch_sizes": {str(k): v for k, v in sizes.items()}}


def run_batch(seg, requests: Sequence[SegmentRequest], stats: BatchStats | None = None
              ) -> list[Answer | Exception]:
    """One Answer (or the request's exception) per request, in order."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.group, []).append(i)
    out: list[Answer | Exception | None] = [None] * len(requests)
    calls = 0
    for idx in groups.values():
        calls += 1
        try:
            for i, a in zip(idx, _segment(seg, [requests[i] for i in idx])):
                out[i] = a
        except Exception as e:
            if len(idx) == 1:
                out[idx[0]] = e
                continue
            for i in idx:  # find the culprit: each request alone
                calls += 1
                try:
                    out[i] = _segment(seg, [requests[i]])[0]
                except Exception as e1:
                    out[i] = e1
    if stats is not None:
        stats.record(len(requests), calls)
    return out


def _segment(seg, group: Sequence[SegmentRequest]) -> list[Answer]:
    first = group[0]
    results = seg.segment_batch([r.image for r in group], list(first.classes),
                                captions=[r.caption for r in group], batch_size=len(group),
                                threshold=first.threshold,
                                candidates=[_candidates(r.candidates) for r in group],
                                return_scores=False)
    return [answer(res) for res in results]


def _candidates(c):
    return list(c) if isinstance(c, tuple) else c


def is_bad_input(e: Exception) -> bool:
    """A request's own fault (HTTP 400), as opposed to the service's (500)."""
    return isinstance(e, InvalidInputError)
