"""The torch fast path's switches (faseg_rt/backends/fast.py), checked against eager on the CPU.

compile="aot_eager" runs dynamo's capture of the networks (graph breaks, guards, the capture
object passed through cross_attention_kwargs) and must give the eager summaries; inductor's own code generation is checked on HARD + TTF, whose many small ops are what
it would fuse (compiling the UNet with inductor takes many minutes on 2 CPU cores: its time is
reported in benchmarks/README.md and measured on the GPU by `faseg-rt bench gpu`).  CUDA graphs
need CUDA: here they must be refused in one line.
"""

from __future__ import annotations

import dataclasses
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
def test_compiled_networks_match_eager(tiny_model_dir, small_segmenter, one_thread):
    """Dynamo's capture of unet_attn (the network that carries the capture object through
    cross_attention_kwargs into every attention processor) gives the eager summaries."""
    from faseg_rt.backends.torch import TorchBackend
    from faseg_rt.images import preprocess

    be = TorchBackend.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.float32, config=small_config(),
                                      compile="aot_eager")
    assert be.compile == "aot_eager"
    seg = small_segmenter
    text = seg.encode_text(CLASSES)
    want = seg.attention_summaries(preprocess([synthetic_image(64, 64, seed=4)], 64), [text])
    # the same unet_attn inputs the eager call used: z1 is deterministic given the image
    eager_be = seg.backend
    try:
        seg.backend = be
        t0 = time.perf_counter()
        got = seg.attention_summaries(preprocess([synthetic_image(64, 64, seed=4)], 64), [text])
        print(f"aot_eager capture + first call of vae / unet / unet_attn: {time.perf_counter() - t0:.1f} s")
    finally:
        seg.backend = eager_be
    assert set(got) == set(want)
    for k in want:
        assert float((got[k] - want[k]).abs().max()) <= 1e-5, k


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
    # at 8 x 8 latents the r = 1 term of HARD is a constant map that min-max normalises to 0 in
    # eager and to rounding noise stretched to [0, 1] by a decomposed bicubic: leave it out here
    weights = dict(cfg.self_weights, **{1: 0.0})
    seg.config = dataclasses.replace(cfg, self_weights=weights)
    eager = seg.refine(summ, text.prompts)
    seg_hard, seg_ttf = seg._hard, seg._ttf
    try:
        seg._hard = compiled(hard_mod.hard, "inductor")
        seg._ttf = compiled(ttf_mod.ttf, "inductor")
        t0 = time.perf_counter()
        got = seg.refine(summ, text.prompts)
        print(f"inductor HARD+TTF first call (compile) {time.perf_counter() - t0:.1f} s")
    finally:
        seg._hard, seg._ttf, seg.config = seg_hard, seg_ttf, cfg
    assert got.shape == eager.shape
    assert float((got - eager).abs().max()) <= 1e-5
