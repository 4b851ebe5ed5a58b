"""Benchmarks under contention (issue 33 item 2): busy neighbours are bounded and always
stopped, the idle / loaded table reads what the run measured, and --cpus pins the benchmark
before the thread policy reads its affinity.  Nothing here times anything against a threshold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
import torch

from faseg_rt.bench import contention, loaded
from faseg_rt.cli import bench as cli_bench


def _gone(pid: int, within_s: float = 10.0) -> bool:
    """True once no process `pid` runs (a zombie of ours counts as gone: it was reaped by wait)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[-1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_busy_neighbours_start_n_processes_and_leave_none():
    with contention.busy_neighbours(2) as procs:
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    assert all(p.poll() is not None for p in procs)


def test_busy_neighbours_are_stopped_when_the_block_raises():
    with pytest.raises(RuntimeError, match="inside"):
        with contention.busy_neighbours(2) as procs:
            raise RuntimeError("inside")
    assert len(procs) == 2 and all(p.poll() is not None for p in procs)


def test_a_neighbour_exits_by_itself_at_its_deadline():
    p = contention.start_neighbour(max_s=0.3)
    try:
        assert p.wait(timeout=30) == 0  # it ended on its own, not by a signal
    finally:
        contention.stop_all([p])


def test_a_neighbour_exits_when_the_process_that_started_it_dies(tmp_path):
    """A parent killed without cleaning up (SIGKILL, no finally) leaves no neighbour behind."""
    code = textwrap.dedent("""
        import sys, time
        from faseg_rt.bench.contention import start_neighbour
        p = start_neighbour(max_s=600)
        print(p.pid, flush=True)
        time.sleep(600)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    try:
        child = int(parent.stdout.readline())
        assert not _gone(child, within_s=0.3)  # running while its parent lives
    finally:
        parent.kill()
        parent.wait()
    assert _gone(child), f"neighbour {child} outlived its parent"


# ----------------------------------------------------------------------------- the table
def _stage(ms):
    return {"median": ms, "p90": ms, "n": 1}


def _path(kind, backend, idle_ms, loaded_ms, threads_, source="affinity", idle_rate=None):
    def phase(total, rate=None):
        r = {k: _stage(total / 10) for k in ("unet_inversion", "hard")} if kind == "ours" else {}
        r.update({"cpu_per_wall": rate} if rate else {})
        return {**r, "total": _stage(total), "threads": threads_, "thread_source": source}
    return {"kind": kind, "backend": backend, "idle": phase(idle_ms, idle_rate), "loaded": phase(loaded_ms)}


FAKE = {"kind": "latency", "mode": "loaded", "model": "tiny", "classes": ["a", "b"], "batch": 1,
        "image": "640x480 synthetic", "background": 2, "iters": 3, "ref_iters": 1, "device": "cpu",
        "dtype": "float32", "errors": {"onnxruntime": "no engines"},
        "phases": {"idle": {"load_before": [0.5, 0, 0], "load_after": [1.9, 0, 0], "wall_s": 10.0,
                            "cpu_s": 19.0},
                   "loaded": {"load_before": [2.0, 0, 0], "load_after": [3.9, 0, 0], "wall_s": 20.0,
                              "cpu_s": 20.0}},
        "paths": {"torch": _path("ours", "torch", 1000.0, 2170.0, 2, idle_rate=1.6),
                  "torch, 1 thread": _path("ours", "torch", 1600.0, 1620.0 * 1.6, 1, "explicit", 0.99),
                  "reference": _path("reference", "reference", 10000.0, 15000.0, 2)},
        "machine": {"cores": 2, "background": 2}}


def test_loaded_table_gives_idle_loaded_and_ratio_per_path():
    table = loaded.loaded_table(FAKE)
    assert "| path | threads | idle ms | loaded ms | loaded / idle | fair share | loaded / fair |" in table
    # 1.6 CPU s per wall s with 2 threads: 40 % of the call runs one thread -> 0.4 * 1.5 + 0.6 * 2
    assert "| torch | 2 (affinity) | 1000.0 | 2170.0 | **2.17x** | 1.80x | 1.21 |" in table
    assert "| torch, 1 thread | 1 (explicit) | 1600.0 | 2592.0 | **1.62x** | 1.50x | 1.08 |" in table
    assert "| reference | 2 (affinity) | 10000.0 | 15000.0 | **1.50x** | - | - |" in table  # no rate recorded
    assert "**onnxruntime**: not run (no engines)" in table
    # the load average before and after each phase, and the process's CPU share
    assert "| idle | 0.50 | 1.90 | 1.90 |" in table and "| loaded (2 neighbours) | 2.00 | 3.90 | 1.00 |" in table
    # which thread count won, per phase; the reference ratio per phase; stages under load
    assert "torch, idle: fastest with **2 threads** (1000 ms); 1 thread 1.60x slower" in table
    assert "torch, loaded: fastest with **2 threads** (2170 ms); 1 thread 1.19x slower" in table
    assert "reference / torch: idle **10.0x**, loaded **6.9x**" in table
    assert "torch, loaded / idle by stage: unet_inversion 2.17x, hard 2.17x" in table
    assert "The idle phase began" not in table  # load 0.5 on 2 cores: idle
    assert table.index("| torch |") < table.index(loaded.TERMS[0])


@pytest.mark.parametrize("rate, threads, n, cores, expected", [
    (2.0, 2, 2, 2, 2.0),         # parallel throughout: (N + T) / C
    (1.0, 2, 2, 2, 1.5),         # one thread throughout: (N + 1) / C
    (1.5, 2, 2, 2, 1.75),        # half and half
    (1.0, 1, 2, 2, 1.5),         # one thread asked for
    (3.0, 4, 1, 4, 7 / 6),       # four cores, a third serial (1x), the rest 5 threads on 4 (1.25x)
    (2.0, 4, 2, 2, 1.5),         # 4 threads on 2 cores take 4 of the 6 runnable threads' share
    (1.8, 2, 1, 2, 1.4),         # one neighbour: the serial part keeps a core, the parallel 1.5x
])
def test_fair_share_ratio_weighs_the_serial_and_parallel_parts_of_the_idle_call(rate, threads, n, cores, expected):
    assert contention.fair_share_ratio(rate, threads, n, cores) == pytest.approx(expected, abs=1e-9)


def test_fair_share_ratio_per_group_gives_the_group_its_share_whatever_its_threads():
    # 2 cores, 3 groups: 2/3 of a core for the call, 3x on its parallel part, 1.5x on its serial
    assert contention.fair_share_ratio(2.0, 2, 2, 2, per_group=True) == pytest.approx(3.0)
    assert contention.fair_share_ratio(1.5, 2, 2, 2, per_group=True) == pytest.approx(2.25)
    assert contention.fair_share_ratio(1.0, 1, 2, 2, per_group=True) == pytest.approx(1.5)


def test_neighbours_in_sessions_of_their_own_lead_their_own_sessions():
    with contention.busy_neighbours(1, own_sessions=True) as (own,):
        with contention.busy_neighbours(1) as (shared,):
            assert os.getsid(own.pid) == own.pid != os.getsid(0)
            assert os.getsid(shared.pid) == os.getsid(0)


def test_fair_share_ratio_is_unknown_without_an_idle_rate_or_cores():
    assert contention.fair_share_ratio(None, 2, 2, 2) is None
    assert contention.fair_share_ratio(1.5, 2, 2, None) is None


def test_a_run_with_neighbours_in_their_own_sessions_says_so_and_shares_per_group():
    res = json.loads(json.dumps(FAKE))
    res.update(neighbour_sessions="own")
    res["machine"]["autogroup"] = True
    table = loaded.loaded_table(res)
    assert "beside 2 busy neighbour processes (each in a session of its own)" in table
    # the same 1.6 CPU s per wall s: 0.4 * 1.5 + 0.6 * 3
    assert "| torch | 2 (affinity) | 1000.0 | 2170.0 | **2.17x** | 2.40x | 0.90 |" in table


def test_a_pinned_run_gives_no_fair_share():
    res = json.loads(json.dumps(FAKE))
    res["machine"]["pinned"] = {"requested": 1, "cpus": [0], "before": [0, 1]}
    assert "| torch | 2 (affinity) | 1000.0 | 2170.0 | **2.17x** | - | - |" in loaded.loaded_table(res)


def test_loaded_table_without_neighbours_has_the_idle_column_only_and_flags_a_busy_start():
    res = json.loads(json.dumps(FAKE))
    res["background"] = 0
    res["phases"].pop("loaded")
    res["phases"]["idle"]["load_before"] = [3.5, 0, 0]
    res["machine"]["pinned"] = {"requested": 1, "cpus": [0], "before": [0, 1]}
    table = loaded.loaded_table(res)
    assert "| path | threads | idle ms |\n" in table and "loaded ms" not in table
    assert "The idle phase began at load average 3.50, above the machine's 2 core(s)" in table
    assert "- pinned (--cpus 1): CPUs [0] of [0, 1]" in table


# ----------------------------------------------------------------------------- the run, with fakes
def test_loaded_latency_times_every_path_idle_then_loaded_with_its_threads(monkeypatch, keep_threads):
    seen = []  # (phase inferred from neighbours, path, torch threads at the call)

    def fake_segmenter_timer(seg, image, classes, caption, warmup, iters):
        seen.append((seg, torch.get_num_threads()))
        return {"total": _stage(1.0)}

    monkeypatch.setattr(loaded, "resolve_model", lambda spec, cache: "model")
    monkeypatch.setattr(loaded, "load_segmenter", lambda args, model, backend: SimpleNamespace(
        device="cpu", dtype=torch.float32, name=backend))
    monkeypatch.setattr(loaded, "time_segmenter", lambda seg, *a: fake_segmenter_timer(seg.name, *a))
    monkeypatch.setattr(loaded, "build_reference", lambda model: "ref")
    monkeypatch.setattr(loaded, "time_reference", lambda *a, ref: (
        seen.append(("reference", torch.get_num_threads())) or {"total": _stage(9.0), "hard_ttf": _stage(1.0)}))
    monkeypatch.setattr(loaded, "SETTLE_S", 0.0)
    args = SimpleNamespace(model="tiny", cache="c", classes="a,b", caption="x", frontend="none",
                           background=1, also_threads=[1], num_threads=2, backends="torch",
                           reference=True, warmup=0, iters=1, ref_iters=1)
    res = loaded.loaded_latency(args)
    assert list(res["paths"]) == ["torch", "torch, 1 thread", "reference"]
    assert seen == [("torch", 2), ("torch", 1), ("reference", 2)] * 2  # idle, then loaded
    assert res["phases"]["loaded"]["neighbours_running"] == 1
    assert res["paths"]["torch, 1 thread"]["loaded"]["threads"] == 1
    assert res["paths"]["torch"]["idle"]["thread_source"] == "explicit"
    assert all(p[ph]["cpu_per_wall"] >= 0 for p in res["paths"].values() for ph in ("idle", "loaded"))
    assert res["machine"]["background"] == 1 and torch.get_num_threads() == 2
    assert res["neighbour_sessions"] == "shared"
    assert loaded.wanted(args) and not loaded.wanted(SimpleNamespace(background=0, also_threads=None))


def test_latency_options_are_checked():
    p = cli_bench.build_parser()
    a = p.parse_args(["latency", "--background", "2", "--also-threads", "1,2", "--cpus", "1"])
    assert (a.background, a.also_threads, a.cpus) == (2, [1, 2], 1)
    assert p.parse_args(["latency"]).background == 0
    assert p.parse_args(["latency"]).neighbour_sessions == "shared"
    assert p.parse_args(["latency", "--neighbour-sessions", "own"]).neighbour_sessions == "own"
    for bad in (["--background", "-1"], ["--also-threads", "0"], ["--cpus", "0"],
                ["--neighbour-sessions", "other"]):
        with pytest.raises(SystemExit):
            p.parse_args(["latency", *bad])


# ----------------------------------------------------------------------------- affinity
PINNED_RUN = """
import json, sys
from faseg_rt.cli import bench as cli_bench
cli_bench.TABLE_BENCHMARKS["ops"] = lambda: (
    lambda args: {"device": "cpu", "rows": []}, lambda res: "| op | ms |\\n|---|---|")
sys.exit(cli_bench.main(["ops", "--cpus", "1", "--out", sys.argv[1], "--tag", "t"]))
"""


def test_cpus_pins_the_benchmark_before_the_policy_and_records_it(tmp_path):
    """In a fresh process (pinning is process-wide): the JSON records the pinned set, the policy
    saw one CPU, and torch runs 1 thread unless OMP_NUM_THREADS asked otherwise."""
    if not contention.can_pin():
        print("skipped: os.sched_setaffinity is not available on this platform")
        pytest.skip("os.sched_setaffinity is not available on this platform")
    allowed = sorted(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    p = subprocess.run([sys.executable, "-c", PINNED_RUN, str(tmp_path)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    m = json.loads((tmp_path / "ops-t.json").read_text())["machine"]
    assert m["pinned"] == {"requested": 1, "cpus": allowed[:1], "before": allowed}
    assert m["affinity"] == allowed[:1]
    assert m["thread_policy"]["cpus_allowed"] == 1 and m["threads"] == 1
    assert m["thread_policy"]["source"] == "affinity"
    assert f"pinned to CPU(s) {allowed[:1]}" in p.stdout


def test_pinning_to_more_cpus_than_allowed_is_refused_before_anything_changes():
    if not contention.can_pin():
        print("skipped: os.sched_setaffinity is not available on this platform")
        pytest.skip("os.sched_setaffinity is not available on this platform")
    before = os.sched_getaffinity(0)
    with pytest.raises(ValueError, match="cannot pin"):
        contention.pin_cpus(len(before) + 1)
    assert os.sched_getaffinity(0) == before


# ----------------------------------------------------------------------------- label workers x threads
def test_workers_settings_and_rates():
    from faseg_rt.bench import workers

    assert workers.parse_settings("2x1, 1X2") == [(2, 1), (1, 2)]
    for bad in ("2", "0x1", "2x", "ax1"):
        with pytest.raises(ValueError, match="WORKERSxTHREADS"):
            workers.parse_settings(bad)
    r = workers.rates([10.0, 11.0, 12.0, 14.0], wall_s=20.0)
    assert r == {"images": 4, "first_row_s": 10.0, "images_per_s_after_first": 0.75,
                 "images_per_s_wall": 0.2}
    assert workers.rates([5.0], 10.0)["images_per_s_after_first"] is None


def test_workers_table_compares_the_settings_from_a_fake_result():
    from faseg_rt.bench import workers

    def run(w, t, steady, code=0):
        return {"workers": w, "threads": t, "exit_code": code, "wall_s": 30.0, "first_row_s": 20.0,
                "images_per_s_after_first": steady, "images_per_s_wall": 0.5,
                "load_before": [1.0, 0, 0], "load_after": [2.0, 0, 0]}
    res = {"model": "tiny", "device": "cpu", "dtype": "float32", "images": 16, "image_px": 512,
           "classes": ["a"] * 5, "rounds": 2, "settings": ["2x1", "1x2", "4x1"],
           "runs": [run(2, 1, 0.6), run(1, 2, 0.5), run(4, 1, None, 1),
                    run(2, 1, 0.8), run(1, 2, 0.5), run(4, 1, None, 1)]}
    table = workers.workers_table(res)
    assert "| 2 x 1 | 0.700 | 0.500 | 30.0 | 20.0 | 1.0 -> 2.0 |" in table  # medians of the rounds
    assert "| 1 x 2 | 0.500 |" in table and "| 4 x 1 | failed (exit 1) |" in table
    assert "Fastest once masks flow: **2x1** (workers x threads), 1.40x 1x2." in table
    assert table.index("| 2 x 1 |") < table.index(workers.TERMS[0])
