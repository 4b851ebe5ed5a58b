"""How many intra-op threads torch runs with: decided once, from what the process may really use.

torch's default counts the host's cores.  A process in a container with a 1.5-CPU quota, a
Ray worker given 1 CPU beside three others, or a process pinned to one core then runs more
threads than it has CPUs, and each parallel region waits for its slowest, descheduled thread
(issue 33 measured 2.17x slower beside two busy neighbours with 2 threads, 1.62x with 1).

The facts, each optional (missing: no limit from it):

- affinity: the CPUs the scheduler lets this process run on (`os.sched_getaffinity(0)`);
- quota: the cgroup CPU quota in CPUs, from cgroup v2 `cpu.max` ("50000 100000" = 0.5 CPU,
  "max 100000" = none) or cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 = none), the
  smallest along the process's cgroup and its parents;
- ray_cpus: the CPUs Ray assigned to this worker or replica (`get_assigned_resources()["CPU"]`;
  an actor that asked for none counts as 1, as Ray's own OMP_NUM_THREADS does), read only when
  Ray is already imported and this process is a Ray worker: the policy never imports Ray;
- explicit: `threads=` / `--threads N`, else `OMP_NUM_THREADS` from the environment.

The decision (`decide`, a pure function): an explicit setting wins as given, even above the
CPUs allowed (the record shows both, so such a run is visible; measuring oversubscription is
a use).  Otherwise threads = the smallest of the affinity count, floor(quota) and floor(ray
CPUs), at least 1 (a 0.5-CPU quota runs 1 thread, 1.5 runs 1, 2.5 runs 2: a thread beyond the
whole CPUs waits for its share of the quota at every parallel region).  In a Ray worker
`OMP_NUM_THREADS` is not taken as the user's: Ray writes it itself (floor of the assigned CPUs,
1 when none were asked for) before the worker runs, so there `threads=` is the explicit way.

Who applies it: `apply()` reads the facts and calls `torch.set_num_threads`.  The processes the
package owns call it once at start: `segment` and `eval` (CLI), each `label` worker and `serve`
replica, and the benchmarks.  Library calls (`Segmenter`, ...) never change the thread count,
so a Python caller's own `torch.set_num_threads` stands; such a caller may call `apply()` (or
`apply(threads=N)`) itself.  A `torch.set_num_threads` made earlier in the same process cannot
be told apart from torch's default, so `apply()` replaces it: pass it as `threads=` instead.

OpenMP waiting.  torch's CPU build here runs its parallel regions on GNU OpenMP (libgomp,
shipped in torch/lib; `torch.__config__.parallel_info()`: "ATen parallel backend: OpenMP"; MKL
uses the same runtime).  libgomp honours `OMP_WAIT_POLICY` (PASSIVE: a thread that waits for work
sleeps at once; ACTIVE: it spins) and `GOMP_SPINCOUNT`; `KMP_BLOCKTIME` belongs to Intel's
OpenMP and does nothing here.  libgomp reads them once, when torch's libraries load, so they
must be in the environment before `import torch`; set later they change nothing in this process
(only in the processes it starts, e.g. a local Ray's workers).  A bounded experiment (2 threads,
median of 7 loops of matmuls, 3 interleaved rounds each in a fresh process, beside one busy
process, on a 2-core machine already at load ~5: indicative only) gave: 192 x 192, 400 matmuls:
default 176 ms, PASSIVE 70 ms; 1024 x 1024, 20 matmuls: default 836 ms, PASSIVE 459 ms.
PASSIVE set after importing torch behaved like the default (its threads kept spinning: 0.6 CPU
seconds per second while the process slept between regions, against 0.06 with PASSIVE set
before).  So `prefer_passive_wait()` sets OMP_WAIT_POLICY=PASSIVE where the user set neither
it nor GOMP_SPINCOUNT; the entry points call it before anything imports torch.  What was not
measured (an idle machine here had none): the cost of waking sleeping threads on an idle
machine, which should be small next to a multi-second call (issue 33 item 2).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

#: the environment variables of libgomp's waiting (KMP_BLOCKTIME: Intel OpenMP only)
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadDecision:
    """What `decide` chose and why.

    threads: torch's intra-op threads; source: "explicit", "OMP_NUM_THREADS", "ray", "cgroup",
    "affinity" or "cpu_count" (the fact that set the number); cpus_allowed: the whole CPUs the
    process may use (None: unknown); quota: the cgroup quota in CPUs (None: none);
    ray_cpus: Ray's CPUs for this worker (None: not a Ray worker); reason: one line.
    """

    threads: int
    source: str
    cpus_allowed: int | None
    quota: float | None
    ray_cpus: float | None
    reason: str

    def record(self) -> dict:
        """What sidecars, manifests and benchmark JSON store: the fields and the wait policy."""
        return {**asdict(self), "wait_policy": os.environ.get("OMP_WAIT_POLICY")}


# ----------------------------------------------------------------------------- pure functions
def parse_cpu_max(text: str | None) -> float | None:
    """cgroup v2 `cpu.max` ("QUOTA PERIOD" in microseconds) -> CPUs; "max ..." or junk -> None."""
    parts = (text or "").split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota, period = float(parts[0]), float(parts[1]) if len(parts) > 1 else 100000.0
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str | None, period_text: str | None) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` -> CPUs; a quota of -1 (none) -> None."""
    try:
        quota, period = float((quota_text or "").strip()), float((period_text or "").strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _whole(cpus: float) -> int:
    """Threads for a CPU budget: its whole CPUs, at least 1 (0.5 -> 1, 1.5 -> 1, 2.5 -> 2)."""
    return max(1, math.floor(cpus + 1e-9))


def _positive_int(text) -> int | None:
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if value >= 1 else None


def decide(affinity=None, quota: float | None = None, ray_cpus: float | None = None,
           explicit: int | None = None, omp_env: str | None = None,
           cpu_count: int | None = None) -> ThreadDecision:
    """The thread count from the facts (module docstring); nothing is read here.

    affinity: the allowed CPU set (or its size); quota: cgroup CPUs (parse_cpu_max /
    parse_cfs); ray_cpus: Ray's CPUs for this worker, None outside Ray; explicit: threads= /
    --threads (checked by rules.threads); omp_env: OMP_NUM_THREADS's text (ignored in a Ray
    worker, where Ray writes it); cpu_count: os.cpu_count(), used when nothing else is known.
    """
    n_aff = len(affinity) if isinstance(affinity, (set, frozenset, list, tuple)) else affinity
    limits = []  # (whole CPUs, source), most specific first: the first of the smallest wins ties
    if ray_cpus is not None:  # an actor given no CPU runs 1 thread, as Ray's own OMP_NUM_THREADS does
        limits.append((_whole(ray_cpus), "ray"))
    if quota is not None:
        limits.append((_whole(quota), "cgroup"))
    if n_aff:
        limits.append((int(n_aff), "affinity"))
    if not limits:
        limits.append((max(1, int(cpu_count or 1)), "cpu_count"))
    allowed, bound = min(limits, key=lambda x: x[0])
    facts = dict(cpus_allowed=allowed, quota=quota, ray_cpus=ray_cpus)
    omp = None if ray_cpus is not None else _positive_int(omp_env)
    for value, source in ((explicit, "explicit"), (omp, "OMP_NUM_THREADS")):
        if value is not None:
            over = f", above the {allowed} CPU(s) this process may use ({bound})" if value > allowed else ""
            return ThreadDecision(int(value), source, reason=f"{source} asked for {value}{over}", **facts)
    why = {"ray": f"Ray assigned {ray_cpus} CPU(s)", "cgroup": f"the cgroup quota is {quota} CPU(s)",
           "affinity": f"the process may run on {n_aff} CPU(s)", "cpu_count": f"the machine has {allowed} CPU(s)"}
    return ThreadDecision(allowed, bound, reason=f"{why[bound]}: {allowed} thread(s)", **facts)


# ----------------------------------------------------------------------------- readers
def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _cgroup_dirs(base: Path, rel: str) -> list[Path]:
    """base/rel and each parent up to base (the quota of any of them bounds the process)."""
    here = base / rel.strip("/") if rel.strip("/") else base
    dirs = [here, *here.parents]
    return [d for d in dirs if d == base or base in d.parents]


def read_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")):
    """(CPUs, where it was read) of the smallest cgroup quota over the process's cgroup and its
    parents, v2 (`cpu.max`) or v1 (`cpu/cpu.cfs_quota_us`); (None, text) when there is none."""
    paths = {}  # controller ("" for v2) -> the process's cgroup path
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                paths[controller] = parts[2]
    found = []
    if (root / "cgroup.controllers").exists():  # v2 (unified)
        for d in _cgroup_dirs(root, paths.get("", "/")):
            cpus = parse_cpu_max(_read(d / "cpu.max"))
            if cpus is not None:
                found.append((cpus, f"{d / 'cpu.max'}"))
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):  # v1
        base = root / name
        if (base / "cpu.cfs_quota_us").exists():
            for d in _cgroup_dirs(base, paths.get("cpu", "/")):
                cpus = parse_cfs(_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us"))
                if cpus is not None:
                    found.append((cpus, f"{d / 'cpu.cfs_quota_us'}"))
            break
    if not found:
        return None, "no cgroup CPU quota"
    return min(found)


def read_affinity() -> set | None:
    """The CPUs this process may run on (None where the platform cannot say, e.g. macOS)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def read_ray_cpus() -> float | None:
    """Ray's CPUs for this worker or replica; None when Ray is not imported or this process is
    not a Ray worker (the driver, a plain script).  Never imports Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not getattr(ray, "is_initialized", lambda: False)():
        return None
    try:
        ctx = ray.get_runtime_context()
        if ctx.worker.mode != ray._private.worker.WORKER_MODE:
            return None
        return float(ctx.get_assigned_resources().get("CPU", 0.0))
    except Exception:  # an older or newer Ray without these: no limit from Ray
        return None


def facts() -> dict:
    """decide's keyword arguments as this process finds them (explicit left out)."""
    quota, _ = read_quota()
    return {"affinity": read_affinity(), "quota": quota, "ray_cpus": read_ray_cpus(),
            "omp_env": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count()}


#: the record of the last apply() in this process (None before), for machine descriptions
last_applied: dict | None = None


def apply(threads: int | None = None) -> dict:
    """Decide from this process's facts and set torch's intra-op threads; returns the record
    ({threads, source, cpus_allowed, quota, ray_cpus, reason, wait_policy}).  threads: the
    explicit count (None: decide), checked by rules.threads."""
    global last_applied
    import torch

    from faseg_rt import rules

    explicit = None if threads is None else rules.threads(threads)
    decision = decide(explicit=explicit, **facts())
    if torch.get_num_threads() != decision.threads:
        torch.set_num_threads(decision.threads)
    last_applied = decision.record()
    return last_applied


def current() -> dict:
    """The record of the threads torch runs with now: apply()'s when the count is still the one
    it set, else the count as found, with this process's facts (source "caller": set by the
    caller, or torch's default)."""
    import torch

    n = torch.get_num_threads()
    if last_applied is not None and last_applied["threads"] == n:
        return last_applied
    found = decide(explicit=n, **facts())
    return replace(found, source="caller", reason=f"set outside the policy: {n}").record()


def prefer_passive_wait(environ=os.environ, modules=sys.modules) -> bool:
    """OMP_WAIT_POLICY=PASSIVE where the user set neither it nor GOMP_SPINCOUNT (module
    docstring: it helped under contention), and only while torch is not imported yet, so that
    this process honours it (the processes it starts inherit it).  True when it was set.  An
    in-process caller that imported torch already keeps its environment as it was."""
    if "torch" in modules or any(v in environ for v in WAIT_VARIABLES):
        return False
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
