"""`faseg-rt bench gpu --dry`: the GPU command runs end to end on the CPU (what needs CUDA is
skipped with its reason), so it cannot rot between the rare runs on a lent GPU."""

from __future__ import annotations

import json

import pytest

from faseg_rt.cli import main


@pytest.mark.slow
def test_bench_gpu_dry_run(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny-sd15-random").symlink_to(tiny_model_dir)  # the session's tiny model, not a rebuild
    out = tmp_path / "gpu"
    rc = main(["bench", "gpu", "--dry", "--in-process", "--out", str(out), "--cache", str(cache)])
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    assert rc == 0, steps
    assert {n: s["status"] for n, s in steps.items()} == {
        "env": "ok", "parity-tiny": "ok", "torch-tiny": "ok", "tensorrt": "skipped", "onnxruntime": "skipped"}
    assert "CUDA" in steps["tensorrt"]["reason"] and steps["env"]["result"]["cuda_available"] is False
    assert steps["parity-tiny"]["result"]["fp16_vs_fp32"].startswith("skipped: fp16 needs CUDA")
    eager = steps["torch-tiny"]["result"]["variants"]["eager"]
    assert eager["latency_ms"]["median"] > 0 and set(eager["images_per_s"]) == {"1"}
    md = (out / "summary.md").read_text()
    assert "| torch-tiny | ok |" in md and "| tensorrt | skipped |" in md
    rows = [ln.split("|")[1].strip() for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert rows == ["env", "parity-tiny", "torch-tiny", "tensorrt", "onnxruntime"]  # the run order
    assert (out / "torch-tiny.json").is_file()
