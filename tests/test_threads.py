"""The thread policy (faseg_rt/threads.py): the decision from faked facts, the cgroup readers on
faked cgroup trees (v2 and v1), Ray's CPUs, explicit settings, and apply() with faked readers."""

from __future__ import annotations

import pytest
import torch

from faseg_rt import threads
from faseg_rt.errors import InvalidInputError
from faseg_rt.threads import decide, parse_cfs, parse_cpu_max, read_quota


@pytest.mark.parametrize("text, cpus", [("max 100000", None), ("max", None), ("50000 100000", 0.5),
                                        ("150000 100000", 1.5), ("250000 100000\n", 2.5),
                                        ("", None), ("junk 1", None), ("200000", 2.0)])
def test_cpu_max(text, cpus):
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize("quota, period, cpus", [("-1", "100000", None), ("50000", "100000", 0.5),
                                                 ("250000\n", "100000\n", 2.5), ("x", "1", None),
                                                 ("100000", "0", None), (None, None, None)])
def test_cfs(quota, period, cpus):
    assert parse_cfs(quota, period) == cpus


@pytest.mark.parametrize("quota, want", [(0.5, 1), (1.0, 1), (1.5, 1), (2.5, 2), (3.99, 3)])
def test_a_fractional_quota_runs_its_whole_cpus_at_least_one(quota, want):
    d = decide(affinity={0, 1, 2, 3, 4, 5, 6, 7}, quota=quota, cpu_count=8)
    assert (d.threads, d.source, d.quota, d.cpus_allowed) == (want, "cgroup", quota, want)


def test_no_quota_takes_the_affinity_even_when_smaller_than_the_machine():
    d = decide(affinity={2, 5}, quota=None, cpu_count=64)
    assert (d.threads, d.source, d.cpus_allowed) == (2, "affinity", 2)
    assert "2 CPU(s)" in d.reason
    # an affinity of 8 under a 2.5-CPU quota: the quota binds
    assert decide(affinity=set(range(8)), quota=2.5, cpu_count=8).threads == 2
    # a quota larger than the affinity: the affinity binds
    assert decide(affinity={0}, quota=4.0, cpu_count=8).source == "affinity"


def test_nothing_known_falls_back_to_the_cpu_count():
    d = decide(cpu_count=6)
    assert (d.threads, d.source) == (6, "cpu_count")
    assert decide().threads == 1


@pytest.mark.parametrize("ray_cpus, want", [(1.0, 1), (0.5, 1), (3.0, 3), (2.5, 2)])
def test_ray_cpus_bound_the_threads(ray_cpus, want):
    d = decide(affinity=set(range(4)), quota=None, ray_cpus=ray_cpus, cpu_count=4)
    assert (d.threads, d.source, d.ray_cpus) == (want, "ray", ray_cpus)
    # Ray asking for more than the quota: the quota still binds
    assert decide(affinity=set(range(4)), quota=1.0, ray_cpus=3.0).source == "cgroup"


def test_a_ray_actor_without_cpus_runs_one_thread():
    """num_cpus=0 (Ray's default for actors): 1 thread, as Ray sets OMP_NUM_THREADS there; the
    scheduler may pack any number of such actors on a node."""
    d = decide(affinity={0, 1}, ray_cpus=0.0, cpu_count=2)
    assert (d.threads, d.source) == (1, "ray")


def test_explicit_wins_over_every_fact_and_says_when_it_oversubscribes():
    d = decide(affinity={0, 1}, quota=1.5, ray_cpus=1.0, explicit=4, omp_env="3", cpu_count=2)
    assert (d.threads, d.source, d.cpus_allowed) == (4, "explicit", 1)
    assert "above the 1 CPU(s)" in d.reason
    assert "above" not in decide(affinity={0, 1}, explicit=1).reason


def test_omp_num_threads_is_the_user_s_outside_ray_only():
    d = decide(affinity=set(range(8)), omp_env="3", cpu_count=8)
    assert (d.threads, d.source) == (3, "OMP_NUM_THREADS")
    # in a Ray worker Ray writes OMP_NUM_THREADS itself: the assigned CPUs decide
    assert decide(affinity=set(range(8)), ray_cpus=2.0, omp_env="1").threads == 2
    for junk in ("", "0", "-2", "two", None):
        assert decide(affinity={0, 1}, omp_env=junk).source == "affinity"


def _tree(root, files: dict):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_read_quota_v2_takes_the_smallest_along_the_cgroup_and_its_parents(tmp_path):
    root = _tree(tmp_path / "cg", {"cgroup.controllers": "cpu memory\n", "cpu.max": "max 100000\n",
                                   "pod/cpu.max": "250000 100000\n", "pod/c1/cpu.max": "max 100000\n"})
    proc = _tree(tmp_path, {"proc_cgroup": "0::/pod/c1\n"}) / "proc_cgroup"
    cpus, where = read_quota(root, proc)
    assert cpus == 2.5 and where.endswith("pod/cpu.max")
    (root / "pod/c1/cpu.max").write_text("50000 100000\n")
    assert read_quota(root, proc)[0] == 0.5
    # no quota anywhere
    for f in ("pod/cpu.max", "pod/c1/cpu.max"):
        (root / f).write_text("max 100000\n")
    assert read_quota(root, proc) == (None, "no cgroup CPU quota")


def test_read_quota_v1(tmp_path):
    root = _tree(tmp_path / "cg", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                                   "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
                                   "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
                                   "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"})
    proc = _tree(tmp_path, {"proc_cgroup": "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n"}) / "proc_cgroup"
    assert read_quota(root, proc)[0] == 1.5
    assert decide(affinity={0, 1, 2, 3}, quota=read_quota(root, proc)[0]).threads == 1
    # the process's own cgroup is not mounted here (a host path): the mount's root still counts
    (root / "cpu,cpuacct/cpu.cfs_quota_us").write_text("50000\n")
    proc.write_text("3:cpu,cpuacct:/elsewhere\n")
    assert read_quota(root, proc)[0] == 0.5


def test_read_quota_without_cgroups(tmp_path):
    assert read_quota(tmp_path / "none", tmp_path / "missing") == (None, "no cgroup CPU quota")


def test_read_ray_cpus_never_imports_ray(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert threads.read_ray_cpus() is None
    assert "ray" not in sys.modules


def _fake_ray(mode: str, assigned: dict):
    from types import SimpleNamespace as NS

    ctx = NS(worker=NS(mode=mode), get_assigned_resources=lambda: assigned)
    return NS(is_initialized=lambda: True, get_runtime_context=lambda: ctx,
              _private=NS(worker=NS(WORKER_MODE="worker")))


def test_read_ray_cpus_in_a_worker_only(monkeypatch):
    """A Ray worker (label actor, serve replica) reads its assigned CPUs; the driver reads none."""
    import sys

    monkeypatch.setitem(sys.modules, "ray", _fake_ray("worker", {"CPU": 1.5, "GPU": 0.0}))
    assert threads.read_ray_cpus() == 1.5
    monkeypatch.setitem(sys.modules, "ray", _fake_ray("worker", {}))
    assert threads.read_ray_cpus() == 0.0  # an actor without num_cpus (decide: 1 thread)
    monkeypatch.setitem(sys.modules, "ray", _fake_ray("driver", {"CPU": 1.0}))
    assert threads.read_ray_cpus() is None


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _fake_facts(monkeypatch, affinity, quota, ray_cpus=None, omp=None):
    monkeypatch.setattr(threads, "read_affinity", lambda: affinity)
    monkeypatch.setattr(threads, "read_quota", lambda: (quota, "faked"))
    monkeypatch.setattr(threads, "read_ray_cpus", lambda: ray_cpus)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)


def test_apply_sets_torch_threads_and_returns_the_record(monkeypatch, restore_threads):
    torch.set_num_threads(2)
    _fake_facts(monkeypatch, {0, 1}, 1.5)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    rec = threads.apply()
    assert torch.get_num_threads() == 1
    assert {k: rec[k] for k in ("threads", "source", "cpus_allowed", "quota", "ray_cpus", "wait_policy")} == \
        {"threads": 1, "source": "cgroup", "cpus_allowed": 1, "quota": 1.5, "ray_cpus": None,
         "wait_policy": "PASSIVE"}
    assert threads.last_applied == rec
    _fake_facts(monkeypatch, {0, 1, 2, 3}, None, ray_cpus=2.0, omp="1")
    assert threads.apply()["source"] == "ray" and torch.get_num_threads() == 2
    _fake_facts(monkeypatch, {0, 1, 2, 3}, None, omp="1")
    assert threads.apply()["source"] == "OMP_NUM_THREADS" and torch.get_num_threads() == 1
    assert threads.apply(3) == {**threads.last_applied, "threads": 3, "source": "explicit"}
    assert torch.get_num_threads() == 3


def test_apply_refuses_a_bad_count_by_the_rules(monkeypatch):
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(InvalidInputError, match="threads must be an integer >= 1"):
            threads.apply(bad)


def test_passive_wait_only_where_the_user_set_nothing_and_before_torch():
    env = {}
    assert threads.prefer_passive_wait(env, modules={}) is True
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(mine)
        assert threads.prefer_passive_wait(env, modules={}) is False and env == mine
    env = {}  # torch loaded already: libgomp read its settings, nothing changes
    assert threads.prefer_passive_wait(env, modules={"torch": torch}) is False and env == {}


def test_the_command_line_sets_passive_before_torch_loads(tmp_path):
    """`faseg-rt` in a fresh process: OMP_WAIT_POLICY is PASSIVE when torch loads (libgomp reads
    it then), unless the user set a wait variable."""
    import os
    import subprocess
    import sys

    code = ("import sys, os\nfrom faseg_rt.cli.main import main\n"
            "m = sys.modules['faseg_rt.cli.main']\n"
            "real = m.build_parser\n"
            "def spy(argv):\n    print('policy at parse:', os.environ.get('OMP_WAIT_POLICY'))\n"
            "    print('torch loaded:', 'torch' in sys.modules)\n    return real(argv)\n"
            "m.build_parser = spy\nmain(['--version'])\n")
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARIABLES}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "policy at parse: PASSIVE" in run.stdout and "torch loaded: False" in run.stdout, run.stderr
    run = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, timeout=120)
    assert "policy at parse: ACTIVE" in run.stdout, run.stderr


def test_this_machine_s_facts_decide_without_error():
    """The real readers on this machine: a decision within what the process may use."""
    d = decide(**threads.facts())
    allowed = threads.read_affinity()
    assert d.threads >= 1 and (allowed is None or d.cpus_allowed <= len(allowed))


def test_onnxruntime_sessions_use_the_policys_threads(monkeypatch, tmp_path):
    """onnxruntime's own pool (default: one thread per physical core, blind to affinity, quotas
    and Ray's CPUs) gets torch's intra-op threads, which the thread policy set."""
    import types

    import torch

    from faseg_rt.backends.onnxruntime import _session

    seen = {}

    class Options:
        intra_op_num_threads = 0

    class Session:
        def __init__(self, path, sess_options=None, providers=None):
            seen["threads"] = sess_options.intra_op_num_threads

        def get_providers(self):
            return ["CPUExecutionProvider"]

    fake = types.SimpleNamespace(SessionOptions=Options, InferenceSession=Session)
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            _session(fake, tmp_path / "g.onnx", ["CPUExecutionProvider"], torch.device("cpu"), "m", "e")
            assert seen["threads"] == n
    finally:
        torch.set_num_threads(before)
