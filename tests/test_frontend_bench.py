"""Smoke run of the front-end latency benchmark on the tiny models: the caption and
recognise stages show up beside the SD stages, and the batching table is written.  Timings are
never asserted (they belong to benchmarks/README.md).  The segmenter is the 64 px one (same
code path, ~50x cheaper); the benchmark's own loading is what test_bench.py exercises."""

import json

from faseg_rt import Segmenter
from faseg_rt.bench import latency as latency_module
from faseg_rt.cli.bench import main as bench_main


def test_latency_benchmark_with_the_front_end(small_segmenter, tiny_model_dir, tmp_path, capsys,
                                              monkeypatch, one_thread):
    def small(args, model, backend="torch", dtype=None):
        return Segmenter(small_segmenter.backend, small_segmenter.tokenizer, small_segmenter.config)

    monkeypatch.setattr(latency_module, "load_segmenter", small)
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


def test_frontend_agreement_in_reduced_precision():
    """What the policy's captioner / recognizer rows rest on (`bench precision --frontend`): the
    tiny models cast to bf16 against themselves in fp32, per model, and float32 against itself
    agrees exactly (the measurement compares like with like)."""
    from faseg_rt.bench.frontend import AGREEMENT_FAMILIES, frontend_agreement, frontend_agreement_table

    res = frontend_agreement("cpu", dtypes=("float32", "bfloat16"), n_images=3)
    same = res["dtypes"]["float32"]
    assert same["captions_equal"] == 1.0
    assert all(same[f] == {"candidates_equal": 1.0, "max_score_diff": 0.0} for f in AGREEMENT_FAMILIES)
    assert all(0 < res["dtypes"]["bfloat16"][f]["max_score_diff"] < 0.1 for f in AGREEMENT_FAMILIES)
    assert "| BLIP captions | 100.0 % |" in frontend_agreement_table(res)
