"""Smoke run of the front-end latency benchmark (issue 12) on the tiny models: the caption and
recognise stages show up beside the SD stages, and the batching table is written.  Timings are
never asserted (they belong to benchmarks/README.md)."""

import json

import pytest

from faseg_rt.cli.bench import main as bench_main


@pytest.mark.slow
def test_latency_benchmark_with_the_front_end(tiny_model_dir, tmp_path, capsys, one_thread):
    rc = bench_main(["latency", "--model", str(tiny_model_dir), "--iters", "1", "--warmup", "0",
                     "--no-reference", "--no-memory", "--frontend", "tiny",
                     "--frontend-batch-sizes", "1,2", "--classes", "sky,ball",
                     "--out", str(tmp_path), "--tag", "t"])
    assert rc == 0
    res = json.loads((tmp_path / "latency-t.json").read_text())
    torch_run = res["backends"]["torch"]
    assert torch_run["caption"]["median"] > 0 and torch_run["recognise"]["median"] > 0
    assert set(res["frontend_batching"]["batches"]) == {"1", "2"}
    assert res["frontend_batching"]["templates"] == 6
    assert "| caption |" in res["markdown"] and "**front end**" in res["markdown"]
    assert "the front end is" in capsys.readouterr().out
