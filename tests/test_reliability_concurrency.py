"""Concurrency: one Segmenter shared by threads gives exactly the serial results, and a
failed call (bad input, or an exception inside a network runner) leaves it usable.

Uses the session `small_segmenter` (the tiny model on 8 x 8 latents: every stage of the method,
cheap enough for a dozen calls).  Intra-op threads are set to 1 for these tests: on a small,
busy CPU several OpenMP threads per call slow such calls down by 10x or more.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from faseg_rt.errors import InvalidInputError
from faseg_rt.testing import synthetic_image

CASES = [  # (image, classes, caption): different class counts, sizes and captions per thread
    (synthetic_image(48, 32, seed=11), ["cat", "dog"], None),
    (synthetic_image(30, 50, seed=12), ["sky", "tree", "red car"], "a street"),
    (synthetic_image(64, 64, seed=13), ["aeroplane"], "something in the air"),
]


@pytest.fixture
def serial(small_segmenter, one_thread):
    return [small_segmenter(img, classes=c, caption=cap) for img, c, cap in CASES]


def same(a, b) -> bool:
    return (np.array_equal(a.labels, b.labels) and np.array_equal(a.scores, b.scores)
            and a.classes == b.classes)


def run_threads(target, n):
    errors = []
    barrier = threading.Barrier(n)

    def wrapped(i):
        try:
            barrier.wait(timeout=60)
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append((i, e))

    threads = [threading.Thread(target=wrapped, args=(i,), name=f"worker-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    return errors


def test_threads_sharing_one_segmenter_match_serial_calls(small_segmenter, serial):
    out: dict[int, list] = {}

    def work(i):
        img, classes, cap = CASES[i]
        out[i] = [small_segmenter(img, classes=classes, caption=cap) for _ in range(2)]

    assert run_threads(work, len(CASES)) == []
    for i, ref in enumerate(serial):
        assert len(out[i]) == 2
        for res in out[i]:
            assert same(res, ref), f"thread {i} differs from the serial result"


def test_failing_calls_leave_the_segmenter_usable(small_segmenter, serial, monkeypatch):
    seg = small_segmenter
    img, classes, cap = CASES[0]
    with pytest.raises(InvalidInputError):
        seg(img, classes=[])
    with pytest.raises(InvalidInputError):
        seg(np.full((8, 8, 3), np.nan, np.float32), classes=classes)

    # an exception deep inside the reconstruction pass (e.g. out of memory in the UNet)
    real = seg.backend.unet_attn
    calls = []

    def broken(**inputs):
        calls.append(1)
        raise RuntimeError("injected failure inside unet_attn")

    monkeypatch.setattr(seg.backend, "unet_attn", broken)
    with pytest.raises(RuntimeError, match="injected"):
        seg(img, classes=classes, caption=cap)
    assert calls
    monkeypatch.setattr(seg.backend, "unet_attn", real)
    assert same(seg(img, classes=classes, caption=cap), serial[0])


def test_a_failure_in_one_thread_does_not_disturb_the_others(small_segmenter, serial, monkeypatch):
    """worker-0's reconstruction pass raises half-way (after the other stages ran); workers 1
    and 2 run at the same time and must still get exactly the serial results."""
    seg = small_segmenter
    real = seg.backend.unet_attn

    def fails_in_worker_0(**inputs):
        out = real(**inputs)
        if threading.current_thread().name == "worker-0":
            raise RuntimeError("injected failure in worker-0")
        return out

    monkeypatch.setattr(seg.backend, "unet_attn", fails_in_worker_0)
    out: dict[int, object] = {}

    def work(i):
        img, classes, cap = CASES[i]
        out[i] = seg(img, classes=classes, caption=cap)

    errors = run_threads(work, len(CASES))
    assert [i for i, _ in errors] == [0] and "injected" in str(errors[0][1])
    assert same(out[1], serial[1]) and same(out[2], serial[2])
    monkeypatch.setattr(seg.backend, "unet_attn", real)
    assert same(seg(*CASES[0][:2], caption=CASES[0][2]), serial[0])


def test_prompts_built_in_parallel_threads_are_the_serial_ones(tokenizer):
    """The shared tokenizer (a Rust fast tokenizer whose padding settings change per call) used
    by four threads at once: every prompt must equal the serially built one.  Without the lock
    in prompts.py, threads see each other's padding ("class 'cat' is 77 tokens long")."""
    from faseg_rt.method.prompts import build_dual_prompts

    vocabs = [["cat", "dog"], ["sky", "tree", "red car"], ["aeroplane"],
              [f"object number {i} thing" for i in range(20)]]
    captions = [None, "a street", "in the air", None]
    with pytest.warns(UserWarning):                  # the long vocabulary's truncation warning
        expected = [build_dual_prompts(tokenizer, v, c) for v, c in zip(vocabs, captions)]
    bad = []

    def work(i):
        for _ in range(150):
            if build_dual_prompts(tokenizer, vocabs[i], captions[i]) != expected[i]:
                bad.append(i)

    with warnings.catch_warnings():          # entered once, here: catch_warnings is not thread-safe
        warnings.simplefilter("ignore")
        errors = run_threads(work, len(vocabs))
    assert errors == []
    assert bad == []
