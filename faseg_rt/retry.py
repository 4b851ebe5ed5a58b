"""What happens when a batch fails: one policy, shared by the service (faseg_rt/serve/batcher.py)
and `faseg-rt label`'s workers (faseg_rt/scale/worker.py).

    outputs, calls = run_isolating(run, items)

`run(items)` returns one result per item.  When it raises:
- a resource error (out of memory on the CPU or the GPU: `is_resource_error`) fails every item
  of the batch with that error, with no rerun: rerunning images one by one on a device that is
  already out of memory is more work for it, and the caller (a 503, an error row) decides;
- any other error reruns each item alone, once, so one bad input gets its own error and the
  others their results (at most len(items) extra calls; a rerun that fails is that item's error).
A batch of one is never rerun.  Nothing is raised: each output is a result or an exception.
"""

from __future__ import annotations

from typing import Callable, Sequence

#: Words of the messages torch / the allocators raise when memory runs out (RuntimeError on
#: older torch and on the CPU allocator).
_OOM_WORDS = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")


def is_resource_error(e: BaseException) -> bool:
    """Out of memory (MemoryError, torch.OutOfMemoryError, an allocator's RuntimeError)."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and any(w in str(e).lower() for w in _OOM_WORDS)


def run_isolating(run: Callable[[list], Sequence], items: Sequence) -> tuple[list, int]:
    """(one result or exception per item, in order; how many calls of `run` it took)."""
    items = list(items)
    try:
        return list(run(items)), 1
    except Exception as e:
        if len(items) == 1 or is_resource_error(e):
            return [e] * len(items), 1
    outputs: list = []
    for item in items:  # find the culprit: each item alone, once
        try:
            outputs.append(run([item])[0])
        except Exception as e1:
            outputs.append(e1)
    return outputs, 1 + len(items)
