"""The conditions a benchmark can be measured under besides an idle machine (issue 33 item 2):
busy neighbour processes beside it, and a CPU affinity that stands in for a CPU quota.

Busy neighbours.  Production rarely gives a process the whole machine: Ray Data runs several
workers per node, Serve replicas sit beside proxies, laptops run other programs.  A neighbour
here is a plain Python process spinning on integer arithmetic: pure CPU, no memory traffic to
speak of, no threads, so N neighbours take N cores' worth of run time and nothing else.  Each
one is bounded three ways, so none can outlive the benchmark: it exits by itself at its
deadline, it exits within milliseconds once the process that started it is gone (its parent
id changes when it is re-parented), and `busy_neighbours` stops every one of them in a
`finally`, also when the measurement inside raises.

Sessions (SESSIONS).  By default the neighbours are this process's children in its session,
so Linux shares the cores per runnable thread: a 2-thread call beside two neighbours on 2
cores gets one core.  Other programs usually sit in other sessions (a terminal, a service) or
cgroups (containers), and the scheduler then shares per group first (autogroup, cgroup CPU
weights): beside two such neighbours on 2 cores the call gets 2/3 of a core however many
threads it runs, and its threads lose more at each parallel region's barrier.  `own_sessions`
starts each neighbour in a session of its own, which autogroup scheduling (when the kernel has it
on: /proc/sys/kernel/sched_autogroup_enabled) treats as such a group.

A simulated quota.  A container's `cpu.max` cannot be made without privileges, so a CPU quota
is simulated by CPU affinity: `pin_cpus(n)` restricts every thread of this process to the
first n CPUs it may use.  On Linux `sched_setaffinity` sets one thread's mask and a new thread
inherits its creator's, so every existing thread is pinned (/proc/self/task), and the thread
policy (faseg_rt/threads.py), which reads `os.sched_getaffinity`, sees the pinned set when it
is applied afterwards.  Affinity is a stricter stand-in than a quota (a 1-CPU quota spreads
its time over every core; affinity runs on one), but it exposes the same mistake: more
threads than CPUs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

#: a neighbour stops by itself after this many seconds even when nobody stops it
DEFAULT_MAX_S = 1800.0

#: the neighbour's program (argv: deadline in seconds, the parent's pid): spin until the
#: deadline or until the parent is gone, checked every few milliseconds
BUSY_CODE = """
import os, sys, time
deadline = time.monotonic() + float(sys.argv[1])
parent = int(sys.argv[2])
x = 0
try:
    while time.monotonic() < deadline and os.getppid() == parent:
        for _ in range(20000):
            x = (x * 31 + 7) % 1000003
except KeyboardInterrupt:
    pass
"""


def start_neighbour(max_s: float = DEFAULT_MAX_S, cpus=None, own_session: bool = False) -> subprocess.Popen:
    """One busy neighbour process; cpus: the CPUs it may run on (None: this process's);
    own_session: start it in a session of its own (SESSIONS)."""
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", BUSY_CODE, str(float(max_s)),
                             str(os.getpid())], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=bool(own_session))
    if cpus:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(proc.pid, set(cpus))
    return proc


def stop_all(procs, grace_s: float = 5.0) -> None:
    """Terminate each process still running, wait for it, kill the ones that do not exit."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def busy_neighbours(n: int, max_s: float = DEFAULT_MAX_S, cpus=None, own_sessions: bool = False):
    """n busy neighbour processes for the block (yields their Popen objects); all are stopped
    when it ends, by an exception too.  cpus: where they may run (None: where this process may;
    a pinned benchmark passes the CPUs it had before pinning, as other programs keep theirs);
    own_sessions: each in a session of its own (SESSIONS)."""
    procs = []
    try:
        for _ in range(int(n)):
            procs.append(start_neighbour(max_s, cpus, own_sessions))
        yield procs
    finally:
        stop_all(procs)


# ----------------------------------------------------------------------------- fair share
#: how the neighbours share the cores with this process: as threads of one group, or as groups
SESSIONS = ("shared", "own")


def autogroup_enabled() -> bool | None:
    """Whether the kernel shares CPU time per session (autogroup); None where it cannot say."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def fair_share_ratio(idle_cpu_rate: float, threads: int, neighbours: int, cores: int,
                     per_group: bool = False) -> float | None:
    """The loaded / idle ratio a call would show beside `neighbours` busy processes if the
    scheduler gave each runnable thread an equal share of `cores` and parallel regions lost
    nothing at their barriers: the bound that no thread count or OpenMP setting can beat without
    taking more than a fair share.  None when it cannot be told (no idle rate, no cores).

    The idle call is split by its CPU seconds per wall second r: with T = min(threads, cores),
    a fraction s = (T - r) / (T - 1) of its wall time runs one thread (r = s + T (1 - s)), the
    rest T threads.  Beside N single-threaded neighbours on C cores, one thread among N + 1
    runnable gets min(1, C / (N + 1)) of a core, and T threads among N + threads get
    C * threads / (N + threads) cores in all against T idle.  So the ratio is
        s * max(1, (N + 1) / C) + (1 - s) * max(1, T (N + threads) / (C * threads)).
    Example (2 cores, 2 threads, 2 neighbours): r = 1.67 gives s = 0.33 and 1.83x; a call that
    kept both cores busy (s = 0) would show 2x, one with no parallel part 1.5x.  The faster the
    idle call runs in parallel, the closer its fair ratio is to 2x: the ratio measures the share
    a call is given, not how fast it is.  That is per-thread fairness (neighbours in this
    process's scheduling group).  per_group: each neighbour is a group of its own (SESSIONS
    "own"), and this process's group gets C / (N + 1) cores however many threads it runs, so the
    parallel part costs max(1, T (N + 1) / C) (2 cores, 2 threads, 2 neighbours: 3x).
    """
    if not idle_cpu_rate or not cores or threads < 1:
        return None
    t_eff = min(threads, cores)
    s = 1.0 if t_eff == 1 else min(1.0, max(0.0, (t_eff - idle_cpu_rate) / (t_eff - 1)))
    serial = max(1.0, (neighbours + 1) / cores)
    if per_group:
        parallel = max(1.0, t_eff * (neighbours + 1) / cores)
    else:
        parallel = max(1.0, t_eff * (neighbours + threads) / (cores * threads))
    return s * serial + (1 - s) * parallel


# ----------------------------------------------------------------------------- affinity
def can_pin() -> bool:
    """True where this platform can set a process's CPU affinity (Linux; not macOS)."""
    return hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")


def _thread_ids() -> list[int]:
    """The ids of this process's threads (0, the calling thread, where /proc cannot say)."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


def pin_cpus(n: int) -> dict:
    """Restrict every thread of this process (and what it starts later) to the first n CPUs it
    may use now.  Returns the record results keep: {"cpus": the pinned set, "before": the set
    before, "requested": n}.  ValueError when n exceeds the CPUs allowed; OSError (from the
    platform) where affinity cannot be set."""
    if not can_pin():
        raise OSError("this platform cannot set CPU affinity (os.sched_setaffinity is missing)")
    before = sorted(os.sched_getaffinity(0))
    if not 1 <= n <= len(before):
        raise ValueError(f"cannot pin to {n} CPU(s): this process may use {len(before)} ({before})")
    cpus = set(before[:n])
    for tid in _thread_ids():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)
    return {"requested": n, "cpus": sorted(os.sched_getaffinity(0)), "before": before}
