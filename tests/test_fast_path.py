"""The torch fast path's switches (faseg_rt/backends/fast.py), checked against eager on the CPU.

compile="aot_eager" runs dynamo's capture of every network and of HARD / TTF (graph breaks,
guards, the capture object passed through cross_attention_kwargs) and must give the eager
results; inductor's own code generation is checked on HARD + TTF, whose many small ops are what
it would fuse (compiling the UNet with inductor takes many minutes on 2 CPU cores: its time is
reported in benchmarks/README.md and measured on the GPU by `faseg-rt bench gpu`).  CUDA graphs
need CUDA: here they must be refused in one line.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from conftest import small_config
from faseg_rt import Segmenter
from faseg_rt.errors import InvalidInputError
from faseg_rt.testing import synthetic_image

CLASSES = ["cat", "grass", "sky"]


def test_switches_refused_where_they_cannot_apply(tiny_model_dir):
    with pytest.raises(InvalidInputError, match="cuda_graphs=True needs device='cuda'"):
        Segmenter.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.float32, cuda_graphs=True,
                                  config=small_config())
    with pytest.raises(InvalidInputError, match="compile must be True, False or one of"):
        Segmenter.from_pretrained(tiny_model_dir, device="cpu", compile="fast", config=small_config())
    with pytest.raises(InvalidInputError, match="apply to the torch backend"):
        Segmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", device="cpu", compile=True,
                                  engines="unused", config=small_config())


@pytest.mark.slow
def test_compiled_segmenter_matches_eager(tiny_model_dir, small_segmenter, one_thread):
    seg = Segmenter.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.float32, config=small_config(),
                                    compile="aot_eager")
    assert seg.backend.compile == "aot_eager"
    img = synthetic_image(80, 56, seed=4)
    t0 = time.perf_counter()
    got = seg(img, classes=CLASSES)
    first = time.perf_counter() - t0
    want = small_segmenter(img, classes=CLASSES)
    assert float(np.abs(got.scores - want.scores).max()) <= 1e-5
    assert float((got.labels == want.labels).mean()) == 1.0
    t0 = time.perf_counter()
    again = seg(img, classes=CLASSES)  # no recompilation: the same shapes
    print(f"aot_eager first call {first:.1f} s, second {time.perf_counter() - t0:.2f} s")
    assert np.array_equal(again.scores, got.scores)


@pytest.mark.slow
def test_inductor_hard_and_ttf_match_eager(small_segmenter, one_thread):
    """HARD and TTF compiled by inductor (C++ on the CPU) on the same captured summaries."""
    from faseg_rt.backends.fast import compiled
    from faseg_rt.images import preprocess
    from faseg_rt.method import hard as hard_mod
    from faseg_rt.method import ttf as ttf_mod

    seg = small_segmenter
    cfg = seg.config
    text = seg.encode_text(CLASSES)
    summ = seg.attention_summaries(preprocess([synthetic_image(64, 64, seed=5)], cfg.image_size), [text])
    eager = seg.refine(summ, text.prompts)
    seg_hard, seg_ttf = seg._hard, seg._ttf
    try:
        seg._hard = compiled(hard_mod.hard, "inductor")
        seg._ttf = compiled(ttf_mod.ttf, "inductor")
        t0 = time.perf_counter()
        got = seg.refine(summ, text.prompts)
        print(f"inductor HARD+TTF first call (compile) {time.perf_counter() - t0:.1f} s")
    finally:
        seg._hard, seg._ttf = seg_hard, seg_ttf
    assert got.shape == eager.shape
    assert float((got - eager).abs().max()) <= 1e-5
