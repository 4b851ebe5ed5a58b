"""The GPU paths, checked without a GPU (docs/export.md, "The TensorRT / fp16 review").

No tensorrt, no onnxruntime-gpu and no CUDA here, so these tests pin what can be pinned on the
CPU: the TensorRT version gate (a fake `tensorrt` module reports each version), no TensorRT API
that 11.x removed is used anywhere, the two optimisation profiles, the 256-byte alignment rule,
the timing cache naming, and onnxruntime's silent CPU fallback refused.  The ONNX structure
checks, the fp16 graphs and the golden data run on the tiny model in tests/test_export.py.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

from faseg_rt.backends.tensorrt import aligned, nearest_profile
from faseg_rt.backends.tensorrt_runtime import require_tensorrt
from faseg_rt.engines.tensorrt_build import profile_shapes, timing_cache_name
from faseg_rt.errors import BackendUnavailableError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("version, ok", [("9.3.0.1", False), ("10.0.1", False), ("10.11.0.33", False),
                                         ("10.12.0.36", True), ("10.16.1", True), ("11.4.0.106", True),
                                         ("12.0.0", False), ("eleven", False)])
def test_tensorrt_version_gate(monkeypatch, version, ok):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
    if ok:
        assert require_tensorrt().__version__ == version
        return
    with pytest.raises(BackendUnavailableError) as e:
        require_tensorrt()
    msg = str(e.value)
    assert "\n" not in msg and version in msg and "10.12" in msg and "pip install" in msg


def test_no_tensorrt_api_that_11_removed():
    """Weak typing (BuilderFlag.FP16 / precision constraints / layer precisions), implicit batch
    and the binding-index API are gone in TensorRT 11: none of it may appear in the package."""
    banned = re.compile(r"BuilderFlag\.(FP16|BF16|INT8|OBEY_PRECISION_CONSTRAINTS|PREFER_PRECISION_CONSTRAINTS"
                        r"|STRONGLY_TYPED)|EXPLICIT_BATCH|(?<!self)\.precision\s*=|set_output_type|execute_async_v2"
                        r"|get_binding_|max_workspace_size|build_engine\(network")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "faseg_rt").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if banned.search(line)]
    assert hits == []


def test_latency_and_throughput_profiles():
    spec = {"inputs": [{"name": "latents", "shape": ["N", 4, 64, 64]}, {"name": "timestep", "shape": [1]},
                       {"name": "class_hidden_states", "shape": ["N", "J", 77, 768]}]}
    lat, thr = profile_shapes(spec, (1, 2, 8), max_class_chunks=4)
    assert lat["latents"] == [[2, 4, 64, 64], [2, 4, 64, 64], [16, 4, 64, 64]]
    assert thr["latents"] == [[2, 4, 64, 64], [16, 4, 64, 64], [16, 4, 64, 64]]
    assert lat["class_hidden_states"] == [[2, 1, 77, 768], [2, 1, 77, 768], [16, 4, 77, 768]]
    assert lat["timestep"] == [[1], [1], [1]]
    assert len(profile_shapes(spec, (4,), 4)) == 1  # one batch size: one profile
    text = {"inputs": [{"name": "input_ids", "shape": ["P", 77]}]}
    assert profile_shapes(text, (1, 8), 4) == [{"input_ids": [[1, 77], [2, 77], [5, 77]]}]
    # a call takes the profile whose opt batch is nearest its own (log scale)
    assert [nearest_profile([2, 16], n) for n in (2, 4, 6, 8, 16)] == [0, 0, 1, 1, 1]


def test_unaligned_inputs_are_copied():
    base = torch.arange(4096, dtype=torch.uint8)
    off = next(i for i in range(256) if (base.data_ptr() + i) % 256 == 0)
    good = base[off:off + 512]
    assert aligned(good) is good
    bad = base[off + 4:off + 516]
    fixed = aligned(bad)
    assert fixed is not bad and torch.equal(fixed, bad)
    assert fixed.data_ptr() != bad.data_ptr()


def test_timing_cache_is_named_by_tensorrt_and_gpu():
    name = timing_cache_name("10.16.1.11", {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    assert name == "timing-10.16.1.11-nvidia-h100-80gb-hbm3-sm90.cache"
    assert timing_cache_name("11.4.0", {"name": "NVIDIA A10", "compute_capability": "8.6"}) != name
