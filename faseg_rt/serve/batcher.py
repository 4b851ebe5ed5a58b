"""Run one dynamic batch of checked requests through `Segmenter.segment_batch`.

The requests Ray Serve gathered (up to max_batch_size within batch_wait_ms) are grouped by
vocabulary and threshold: one segment_batch call per group, so the text-embedding cache and
HARD's shared-K batching apply, and every image of a call uses the threshold it asked for.
With the default batching ("invariant", the replica's Segmenter.batch_invariant) each request's
answer is byte-identical to a single `Segmenter.__call__` on its inputs, whatever shares its
batch; with "shared" the group's images share network passes, and an answer may differ from its
single call by float rounding (a few pixels; benchmarks/README.md measures it).  A failed
group follows faseg_rt.retry: rerun request by request once, so one bad request gets its own
error and the others their answers, except out of memory, which fails the group's requests
(503) without rerunning them.  Nothing is raised: each slot holds an Answer or the
exception of that request.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Sequence

from faseg_rt.errors import InvalidInputError
from faseg_rt.retry import is_resource_error, run_isolating
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
        answers, n = run_isolating(lambda group: _segment(seg, group), [requests[i] for i in idx])
        calls += n
        for i, a in zip(idx, answers):
            out[i] = a
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


def is_overloaded(e: Exception) -> bool:
    """The replica ran out of memory (HTTP 503 with Retry-After; the batch was not rerun)."""
    return is_resource_error(e)
