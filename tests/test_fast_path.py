"""The torch fast path's switches (faseg_rt/backends/fast.py), checked against eager on the CPU.

compile="eager" runs dynamo's capture of unet_attn (graph breaks, guards, the capture object
passed through cross_attention_kwargs) and must give the eager summaries.  Inductor's own code
generation is checked on HARD + TTF, whose many small ops are what it would fuse, when
FASEG_INDUCTOR_TESTS=1 (that C++ build takes minutes on 2 CPU cores, the UNet's far longer:
times in benchmarks/README.md; GPU times come from `faseg-rt bench gpu`).  CUDA graphs need
CUDA: here they must be refused in one line.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
import torch

from faseg_rt import Segmenter
from faseg_rt.errors import InvalidInputError
from faseg_rt.testing import small_config, synthetic_image

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
def test_compiled_unet_attn_matches_eager(tiny_model_dir, small_segmenter, one_thread):
    """Dynamo's capture of unet_attn, the network that carries the capture object through
    cross_attention_kwargs into every attention processor: same summaries as eager.  The
    "eager" compile backend runs dynamo's graphs as captured (what can go wrong in our code:
    graph breaks, guards, the capture's Python state); AOT / inductor lowering of the UNet takes
    minutes on 2 CPU cores and is measured by `faseg-rt bench gpu` instead."""
    from faseg_rt.backends.torch import TorchBackend
    from faseg_rt.engines.graphs import graph_specs
    from faseg_rt.engines.onnx_export import example_inputs

    be = TorchBackend.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.float32, config=small_config(),
                                      compile="eager")
    assert be.compile == "eager"
    spec = graph_specs(be.dims)["unet_attn"]
    inputs = example_inputs(spec, be.dims, {"N": 2, "J": 2, "P": 3}, seed=3)
    want = small_segmenter.backend.unet_attn(**inputs)
    t0 = time.perf_counter()
    got = be.unet_attn(**inputs)
    print(f"dynamo capture + first call of unet_attn: {time.perf_counter() - t0:.1f} s")
    assert set(got) == set(want)
    for k in want:
        assert float((got[k] - want[k]).abs().max()) <= 1e-5, k


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FASEG_INDUCTOR_TESTS") != "1",
                    reason="inductor's C++ build of HARD + TTF took 3.5 min on this 2-core machine, over the "
                           "suite's budget; set FASEG_INDUCTOR_TESTS=1 to run it")
def test_inductor_hard_and_ttf_match_eager(small_segmenter, one_thread):
    """HARD and TTF compiled by inductor (C++ on the CPU) on the same captured summaries."""
    from faseg_rt.images import preprocess
    from faseg_rt.segmenter import Segmenter

    cfg = small_segmenter.config
    # at 8 x 8 latents the r = 1 term of HARD is a constant map that min-max normalises to 0 in
    # eager and to rounding noise stretched to [0, 1] by a decomposed bicubic: leave it out here
    cfg = dataclasses.replace(cfg, self_weights={**cfg.self_weights, 1: 0.0})
    seg = Segmenter(small_segmenter.backend, small_segmenter.tokenizer, cfg)
    text = seg.encode_text(CLASSES)
    summ = seg.attention_summaries(preprocess([synthetic_image(64, 64, seed=5)], cfg.image_size), [text])
    eager = seg.refine(summ, text.prompts)
    inductor = Segmenter(seg.backend, seg.tokenizer, cfg, compile="inductor")
    t0 = time.perf_counter()
    got = inductor.refine(summ, text.prompts)
    print(f"inductor HARD+TTF first call (compile) {time.perf_counter() - t0:.1f} s")
    assert got.shape == eager.shape
    assert float((got - eager).abs().max()) <= 1e-4  # the scores' parity bar (inductor reorders sums)
