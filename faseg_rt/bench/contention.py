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


def start_neighbour(max_s: float = DEFAULT_MAX_S, cpus=None) -> subprocess.Popen:
    """One busy neighbour process; cpus: the CPUs it may run on (None: this process's)."""
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", BUSY_CODE, str(float(max_s)),
                             str(os.getpid())], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
def busy_neighbours(n: int, max_s: float = DEFAULT_MAX_S, cpus=None):
    """n busy neighbour processes for the block (yields their Popen objects); all are stopped
    when it ends, by an exception too.  cpus: where they may run (None: where this process may;
    a pinned benchmark passes the CPUs it had before pinning, as other programs keep theirs)."""
    procs = []
    try:
        for _ in range(int(n)):
            procs.append(start_neighbour(max_s, cpus))
        yield procs
    finally:
        stop_all(procs)


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
