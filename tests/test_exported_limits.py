"""Exported backends take any vocabulary: unet_attn in groups of at most the engines' chunk
limit, the text encoder in pieces no larger than its profile, batches checked up front."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from faseg_rt.backends.base import ChunkGroups, exported_limits
from faseg_rt.engines.tensorrt_build import profile_shapes
from faseg_rt.errors import InvalidInputError


def test_chunk_groups_equal_one_call():
    torch.manual_seed(0)
    calls = []

    def unet_attn(latents, class_hidden_states, **_):
        calls.append(class_hidden_states.shape[1])
        maps = class_hidden_states.sum(-1, keepdim=True).transpose(2, 3)   # (N, J, 1, 77)
        return {"cross_8": maps * 2, "self_4": latents.sum(), "q_8": latents + 1}

    inputs = {"latents": torch.randn(2, 3), "class_hidden_states": torch.randn(2, 10, 77, 8)}
    whole = unet_attn(**inputs)
    calls.clear()
    got = ChunkGroups(unet_attn, 4)(**inputs)
    assert calls == [4, 4, 2]
    assert torch.equal(got["cross_8"], whole["cross_8"]) and torch.equal(got["q_8"], whole["q_8"])
    calls.clear()
    ChunkGroups(unet_attn, 16)(**inputs)
    assert calls == [10]  # under the limit: one call, as before


def test_limits_come_from_the_manifest():
    spec = {"inputs": [{"name": "latents", "shape": ["N", 4, 64, 64]},
                       {"name": "class_hidden_states", "shape": ["N", "J", 77, 768]}]}
    te = {"inputs": [{"name": "input_ids", "shape": ["P", 77]}]}
    man = {"build_args": {"max_class_chunks": 4},
           "engines": {"profiles": {"unet_attn": profile_shapes(spec, (1, 2), 4),
                                    "text_encoder": profile_shapes(te, (1, 2), 4)}}}
    assert exported_limits(man, "tensorrt") == {"max_prompts": 5, "max_latents": 4, "max_chunks": 4}
    assert exported_limits(man, "onnxruntime") == {"max_prompts": None, "max_latents": None, "max_chunks": 4}


# long prompts are the subject here; test_prompts asserts the warning
@pytest.mark.filterwarnings("ignore:the full prompt is:UserWarning")
@pytest.mark.slow  # the session segmenter and 200 class prompts through the text encoder
def test_segmenter_keeps_text_calls_and_batches_within_the_backend(segmenter):
    from faseg_rt import Segmenter
    from faseg_rt.bench.vocab import large_vocabulary

    sizes = []
    inner = segmenter.backend.text_encoder

    def text_encoder(input_ids):
        sizes.append(input_ids.shape[0])
        return inner(input_ids=input_ids)

    be = dataclasses.replace(segmenter.backend, text_encoder=text_encoder, max_prompts=5, max_latents=4)
    seg = Segmenter(be, segmenter.tokenizer, segmenter.config)
    classes = list(large_vocabulary()[:200])
    got = seg.encode_text(classes)
    assert max(sizes) == 5 and sum(sizes) == got.chunks.shape[0] + 1
    ref = segmenter.encode_text(classes)
    torch.testing.assert_close(got.chunks, ref.chunks, atol=1e-5, rtol=1e-5)
    # shared network passes: 4 images per call are refused before any work; invariant batches run
    # one image per call, so the same batch_size is within the limit (it fails on the input)
    with pytest.raises(InvalidInputError, match=r"batch_size 4 is over .*\(2 images per call\)"):
        seg.segment_batch([object()] * 5, ["sky"], batch_size=4, batch_invariant=False)
    with pytest.raises(InvalidInputError, match="cannot read an image from object"):
        seg.segment_batch([object()] * 5, ["sky"], batch_size=4)


def test_config_that_weighs_skipped_maps_is_refused(segmenter):
    from faseg_rt.backends.base import ExportedBackend, exported_skip_cross
    from faseg_rt.config import FASegConfig
    from faseg_rt.engines.build import default_skip_cross

    assert default_skip_cross(64) == (64,) and default_skip_cross(8) == ()
    b = segmenter.backend
    exported = ExportedBackend(name="onnxruntime", device=b.device, dtype=b.dtype, dims=b.dims,
                               vae_encoder=b.vae_encoder, text_encoder=b.text_encoder, unet=b.unet,
                               unet_attn=b.unet_attn,
                               skip_cross=exported_skip_cross({"build_args": {"skip_cross": [64]}}))
    assert exported.for_config(FASegConfig()) is exported  # the default config weighs 64 by 0
    cfg = FASegConfig(cross_weights={8: 0.1, 16: 0.4, 32: 0.4, 64: 0.1})
    with pytest.raises(InvalidInputError, match=r"resolution\(s\) \[64\].*--skip-cross none"):
        exported.for_config(cfg)
