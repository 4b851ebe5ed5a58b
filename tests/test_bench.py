"""The benchmark harness measures what it says: stage timers, peak-memory accounting, tables.

Nothing here times anything against a threshold (timings are for benchmarks, not tests).
"""

import json
import warnings

import pytest
import torch

from faseg_rt.bench import common as bench
from faseg_rt.bench.latency import TERMS as latency_terms
from faseg_rt.cli.bench import main as bench_main
from faseg_rt.profiling import record, stage


def test_stage_timer_records_only_inside_a_recorder():
    with stage("outside"):
        pass  # no recorder: a no-op, nothing to collect
    with record() as t:
        with stage("a"):
            torch.ones(10).sum()
        with stage("a"):
            pass
        with stage("b"):
            pass
    assert set(t.ms) == {"a", "b"}
    assert all(v >= 0 for v in t.ms.values())


def test_peak_tensor_memory_counts_live_storages_and_their_release():
    with torch.inference_mode(), bench.PeakTensorMemory() as m:
        a = torch.empty(2**20, dtype=torch.uint8)         # 1 MiB
        b = torch.empty(2**21, dtype=torch.uint8)         # 2 MiB: 3 MiB live
        del a, b
        c = torch.empty(2**20, dtype=torch.uint8)         # 1 MiB after both were freed
        view = c[:10]                                     # a view shares the storage
        del c, view
    assert m.peak == 3 * 2**20
    assert m.current == 0


def test_summarize_median_and_p90():
    s = bench.summarize([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    assert s["median"] == 6.0 and s["p90"] == 10.0 and s["n"] == 11


@pytest.mark.slow  # runs the benchmark end to end
def test_latency_benchmark_end_to_end_writes_json_and_table(tiny_model_dir, tmp_path, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = bench_main(["latency", "--model", str(tiny_model_dir), "--iters", "1", "--warmup", "0",
                         "--no-reference", "--out", str(tmp_path), "--tag", "t"])
    assert rc == 0
    # K = 150 (memory) is longer than one prompt on purpose: its truncation warning stays out
    assert not [w for w in caught if "full prompt" in str(w.message)]
    res = json.loads((tmp_path / "latency-t.json").read_text())
    r = res["backends"]["torch"]
    for k in bench.STAGES:
        assert r[k]["n"] == 1
    # the networks and HARD were really timed, and the stages add up to at most the total
    assert r["unet_inversion"]["median"] > 0 and r["hard"]["median"] > 0
    assert sum(r[k]["median"] for k in bench.STAGES) <= r["total"]["median"] * 1.01
    assert r["floor"]["median"] > 0
    assert set(res["hard_memory_mb"]) == {"K=20", "K=150"}
    captured = capsys.readouterr()
    assert "| **total** |" in captured.out and "network-only floor" in captured.out
    assert (captured.out + captured.err).count("| **total** |") == 1     # the table, once
    for term in latency_terms:                                           # explained under it
        assert term in captured.out
    assert captured.out.index("| **total** |") < captured.out.index(latency_terms[0])


@pytest.mark.slow  # runs the benchmark end to end
def test_profile_lists_top_operators_by_self_time(tiny_model_dir, tmp_path, capsys):
    rc = bench_main(["profile", "--model", str(tiny_model_dir), "--top", "5", "--classes", "cat,dog",
                     "--out", str(tmp_path), "--tag", "t"])
    assert rc == 0
    res = json.loads((tmp_path / "profile-t.json").read_text())
    rows = res["rows"]
    assert len(rows) == 5 and res["total_ms"] > 0
    ms = [r["self_ms"] for r in rows]
    assert ms == sorted(ms, reverse=True) and ms[0] > 0
    # self times do not overlap, so the listed operators fit inside the one timed call
    assert sum(r["share"] for r in rows) <= 1.05
    assert all(r["calls"] >= 1 and r["op"] for r in rows)
    assert "| operator | calls |" in capsys.readouterr().out


@pytest.mark.slow  # runs the benchmark end to end
def test_throughput_runs_each_batch_size_in_a_fresh_process(tiny_model_dir, tmp_path, capsys):
    rc = bench_main(["throughput", "--model", str(tiny_model_dir), "--batch-sizes", "2", "--images", "2",
                     "--out", str(tmp_path), "--tag", "t"])
    assert rc == 0
    res = json.loads((tmp_path / "throughput-t.json").read_text())
    r = res["batches"]["2"]
    assert "error" not in r, r
    assert r["images"] == 2 and r["images_per_s"] > 0 and r["peak_rss_mb"] > 100
    assert 0 < r["hard_extra_mb_k20"] < r["peak_rss_mb"]
    assert res["device"] == "cpu" and res["dtype"] == "float32"
    assert "| 2 |" in capsys.readouterr().out


def test_throughput_table_explains_every_column_under_it():
    from faseg_rt.bench.throughput import TERMS, throughput_table

    res = {"model": "tiny", "device": "cpu", "dtype": "float32", "batches": {
        "1": {"images_per_s": 1.5, "peak_rss_mb": 900, "hard_extra_mb_k20": 12},
        "2": {"error": ["out of memory"]}}}
    text = throughput_table(res)
    header = next(line for line in text.splitlines() if line.startswith("| batch"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    explained = [t.split(":", 1)[0].removeprefix("- ") for t in TERMS]
    assert columns == explained                                       # every column, in order
    assert text.index("| 2 | error") < text.index(TERMS[0]) and all(t in text for t in TERMS)


def test_ablations_table_explains_its_terms_under_it():
    from faseg_rt.bench.ablations import TERMS, ablations_table

    names = ["S_64 @ maps: fused attention vs dense per-head softmax",
             "A_32 @ maps: factorised (blocksum, S_32, bicubic)",
             "HARD on K=3 classes: all classes in one call vs a loop over classes",
             "text embeddings: cache hit vs encoder call"]
    rows = [{"optimisation": n, "fast_ms": 1.0, "plain_ms": 2.0, "speedup": 2.0, "max_abs_diff": 0.0,
             "note": "plain builds 4096 x 4096" if i == 0 else ""} for i, n in enumerate(names)]
    text = ablations_table({"model": "tiny", "device": "cpu", "classes": 3, "rows": rows})
    terms = "\n".join(TERMS)
    for name in names:           # the term each row starts with is explained
        assert f"- {name.split(':')[0].split(' on ')[0]}:" in terms, name
    for word in ("blocksum", "S_32", "bicubic", "K:", "fast / plain"):
        assert word in terms
    assert text.index(names[-1]) < text.index(TERMS[0]) and all(t in text for t in TERMS)
    assert f"- {names[0]}: plain builds 4096 x 4096" in text              # a row's note too


def test_batching_benchmark_compares_both_ways_with_single_calls(tiny_model_dir, tmp_path, capsys):
    """64 px, two images: the invariant way matches every single call; the table explains itself."""
    from faseg_rt.bench.batching import TERMS

    rc = bench_main(["batching", "--model", str(tiny_model_dir), "--latents", "8", "--images", "3",
                     "--batch-size", "3", "--repeats", "1", "--out", str(tmp_path), "--tag", "t"])
    assert rc == 0
    res = json.loads((tmp_path / "batching-t.json").read_text())
    (row,) = res["rows"]
    assert row["image_size"] == 64 and row["images"] == 3
    assert row["invariant"]["pixels_differing"] == 0 and row["invariant"]["images_differing"] == 0
    assert row["invariant_img_per_s"] > 0 and row["shared_cpu_s_per_img"] > 0
    out = capsys.readouterr().out
    assert "| 64 px | 3 | 3 |" in out and all(t in out for t in TERMS)
