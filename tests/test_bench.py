"""The benchmark harness measures what it says: stage timers, peak-memory accounting, tables.

Nothing here times anything against a threshold (timings are for benchmarks, not tests).
"""

import json

import torch

from faseg_rt import bench
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


def test_latency_benchmark_end_to_end_writes_json_and_table(tiny_model_dir, tmp_path, capsys):
    rc = bench.main(["latency", "--model", str(tiny_model_dir), "--iters", "1", "--warmup", "0",
                     "--no-reference", "--no-memory", "--out", str(tmp_path), "--tag", "t"])
    assert rc == 0
    res = json.loads((tmp_path / "latency-t.json").read_text())
    r = res["backends"]["torch"]
    for k in bench.STAGES:
        assert r[k]["n"] == 1
    # the networks and HARD were really timed, and the stages add up to at most the total
    assert r["unet_inversion"]["median"] > 0 and r["hard"]["median"] > 0
    assert sum(r[k]["median"] for k in bench.STAGES) <= r["total"]["median"] * 1.01
    assert r["floor"]["median"] > 0
    out = capsys.readouterr().out
    assert "| **total** |" in out and "network-only floor" in out
