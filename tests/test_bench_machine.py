"""Benchmark results say where they come from (issue 33 item 5): the CPU model, the ISA in use,
threads, load average before and after, and a heading on a table measured under load."""

from __future__ import annotations

import json

import pytest
import torch

from faseg_rt import threads
from faseg_rt.bench import common
from faseg_rt.cli import bench as cli_bench

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma bmi2
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx avx2 fma bmi2
"""


def test_cpu_description_reads_the_model_and_the_isa_flags():
    d = common.cpu_description(CPUINFO)
    assert d["cpu"] == "AMD EPYC 7B13" and d["cpu_flags"] == ["avx2"]
    assert d["isa"] == torch.backends.cpu.get_cpu_capability()
    amx = common.cpu_description(CPUINFO.replace("bmi2", "bmi2 avx512f avx512_bf16 amx_bf16 amx_tile"))
    assert amx["cpu_flags"] == ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    assert common.cpu_description("")["cpu"]  # no /proc/cpuinfo: platform's name, not empty


def test_cpu_description_names_a_onednn_cap(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert common.cpu_description(CPUINFO)["isa"].endswith("(oneDNN max AVX2)")


def test_machine_info_fields(monkeypatch):
    monkeypatch.setattr(common.os, "getloadavg", lambda: (3.5, 2.0, 1.0))
    m = common.machine_info("cpu", load_before=(0.5, 0.4, 0.3))
    assert {"python", "torch", "cpu", "isa", "cpu_flags", "threads", "thread_policy", "cores",
            "load_before", "load_after"} <= set(m)
    assert m["threads"] == torch.get_num_threads() == m["thread_policy"]["threads"]
    assert m["load_before"] == [0.5, 0.4, 0.3] and m["load_after"] == [3.5, 2.0, 1.0]
    assert set(m["cpu_flags"]) <= set(common.ISA_FLAGS)
    json.dumps(m)  # it goes into the result JSON as it is
    assert common.machine_info("cpu")["load_before"] is None


def _machine(before, after, allowed=2, cores=8):
    return {"cpu": "X", "isa": "AVX2", "cpu_flags": ["avx2"], "threads": 2, "cores": cores,
            "thread_policy": {"cpus_allowed": allowed, "source": "affinity"}, "torch": "2",
            "load_before": before, "load_after": after}


@pytest.mark.parametrize("before, after, loaded", [([0.3, 0, 0], [1.9, 0, 0], False),
                                                    ([2.0, 0, 0], [2.0, 0, 0], False),
                                                    ([4.1, 0, 0], [1.0, 0, 0], True),
                                                    ([0.2, 0, 0], [3.0, 0, 0], True),
                                                    (None, [2.5, 0, 0], True)])
def test_a_run_under_load_says_so_in_its_heading(before, after, loaded):
    head = common.loaded_heading(_machine(before, after))
    assert bool(head) == loaded
    if loaded:
        assert head.startswith("**Loaded run") and "above the 2 CPU(s)" in head
    # the CPUs the run could use count, not the machine's cores (8 here)
    assert not common.loaded_heading(_machine([3.0, 0, 0], [3.0, 0, 0], allowed=4))
    assert common.loaded_heading(_machine([3.0, 0, 0], [3.0, 0, 0], allowed=None, cores=2))


def test_machine_line_names_cpu_isa_threads_and_load():
    line = common.machine_line(_machine([0.5, 0, 0], [1.5, 0, 0]))
    assert line.startswith("Machine: X, kernels AVX2 (flags: avx2), 2 thread(s) (affinity) of 8 core(s)")
    assert "load average 0.5 -> 1.5" in line


def test_every_table_benchmark_records_the_machine_and_heads_a_loaded_table(monkeypatch, tmp_path, capsys):
    """Through cmd_bench (every table benchmark and benchmarks/*.py): JSON and table alike."""
    loads = iter([(9.0, 1.0, 1.0), (9.5, 1.0, 1.0)])  # before the run, after it
    monkeypatch.setattr(common.os, "getloadavg", lambda: next(loads))
    monkeypatch.setattr(cli_bench.os, "getloadavg", lambda: next(loads))
    seen = []
    monkeypatch.setitem(cli_bench.TABLE_BENCHMARKS, "ops", lambda: (
        lambda args: seen.append(torch.get_num_threads()) or {"device": "cpu", "rows": []},
        lambda res: "| op | ms |\n|---|---|"))
    before = torch.get_num_threads()
    try:
        rc = cli_bench.main(["ops", "--out", str(tmp_path), "--tag", "t", "--threads", "1"])
    finally:
        torch.set_num_threads(before)
        threads.last_applied = None
    assert rc == 0 and seen == [1]  # the policy ran first, --threads winning
    res = json.loads((tmp_path / "ops-t.json").read_text())
    m = res["machine"]
    assert m["load_before"] == [9.0, 1.0, 1.0] and m["load_after"] == [9.5, 1.0, 1.0]
    assert m["thread_policy"]["source"] == "explicit" and m["isa"] and "cpu_flags" in m
    out = capsys.readouterr().out
    assert out.startswith("**Loaded run: load average 9.0 before, 9.5 after")
    assert out.index("**Loaded run") < out.index("| op | ms |") < out.index("Machine: ")
    assert res["markdown"].startswith("**Loaded run")
