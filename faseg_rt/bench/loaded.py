"""Latency on an idle machine and beside busy neighbours, side by side in one run
(`faseg-rt bench latency --background N`, issue 33 item 2).

Every path is timed twice: first with nothing of ours running beside it ("idle"), then while N
busy neighbour processes spin beside it ("loaded", faseg_rt/bench/contention.py).  The paths:
ours on each backend asked for, with the thread policy's threads (or --threads); the torch
backend again with each count of --also-threads (explicit, even above the CPUs allowed); and
the literal reference (--reference).  Everything is loaded before the first phase, so a phase
times calls only, and each phase records the load average before and after it and the CPU
seconds this process got per wall second.  A ratio of a path's loaded time to its idle time
measured in the same run is what moves with contention; the absolute times move with the
machine.  Without neighbours (--also-threads or --cpus alone) only the idle phase runs.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from faseg_rt.bench.common import STAGES, load_segmenter, resolve_model
from faseg_rt.bench.contention import autogroup_enabled, busy_neighbours, fair_share_ratio
from faseg_rt.bench.timers import build_reference, time_reference, time_segmenter

#: seconds the neighbours run before the loaded phase's first call (they start in milliseconds)
SETTLE_S = 1.0


@dataclass
class TimedPath:
    """One path of the table: name, "ours" or "reference", its backend, the explicit torch
    threads it runs with (None: the thread policy), the timer, and its result per phase."""

    name: str
    kind: str
    backend: str
    threads: int | None
    timer: Callable[[], dict]
    results: dict = field(default_factory=dict)


def wanted(args) -> bool:
    """True when `bench latency` runs this mode: --background N > 0 or --also-threads given."""
    return bool(getattr(args, "background", 0) or getattr(args, "also_threads", None))


def _paths(args, model, image, classes, caption, res) -> list[TimedPath]:
    """The paths to time, each loaded once; a backend that cannot load goes to res["errors"]."""
    also = [n for n in (args.also_threads or []) if n != args.num_threads]
    paths = []
    for backend in args.backends.split(","):
        try:
            seg = load_segmenter(args, model, backend)
        except Exception as e:  # report, keep measuring the others
            res["errors"][backend] = f"{type(e).__name__}: {e}"
            print(f"[bench] {backend}: not available: {e}", file=sys.stderr)
            continue
        res["device"], res["dtype"] = str(seg.device), str(seg.dtype).removeprefix("torch.")
        run = functools.partial(time_segmenter, seg, image, classes, caption, args.warmup, args.iters)
        paths.append(TimedPath(backend, "ours", backend, args.num_threads, run))
        if backend == "torch":  # onnxruntime's sessions keep the thread count they were made with
            paths += [TimedPath(f"torch, {_threads(n)}", "ours", backend, n, run) for n in also]
    if args.reference:
        run = functools.partial(time_reference, model, image, classes, caption, args.ref_iters,
                                ref=build_reference(model))
        paths.append(TimedPath("reference", "reference", "reference", args.num_threads, run))
    return paths


def _threads(n: int) -> str:
    return f"{n} thread{'s' * (n != 1)}"


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def run_phase(paths: list[TimedPath], phase: str) -> dict:
    """Time every path once more under the name `phase`; returns the phase's record: load
    average before and after, wall seconds and this process's CPU seconds."""
    from faseg_rt.threads import apply

    load_before, t0, c0 = os.getloadavg(), time.perf_counter(), _cpu_s()
    for p in paths:
        rec = apply(p.threads)
        print(f"[bench] {phase}: {p.name} ({_threads(rec['threads'])}) ...", file=sys.stderr)
        w0, c0_path = time.perf_counter(), _cpu_s()
        r = p.timer()
        r.update(threads=rec["threads"], thread_source=rec["source"],
                 cpu_per_wall=(_cpu_s() - c0_path) / max(time.perf_counter() - w0, 1e-9))
        p.results[phase] = r
    return {"load_before": list(load_before), "load_after": list(os.getloadavg()),
            "wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0}


def loaded_latency(args) -> dict:
    """The idle phase, then (with --background N) the loaded one; the result dict of the JSON."""
    from faseg_rt.testing import synthetic_image
    from faseg_rt.threads import apply

    if args.frontend != "none":
        raise ValueError("--background / --also-threads time the call without the front end: drop --frontend")
    n = int(args.background or 0)
    model = resolve_model(args.model, Path(args.cache))
    classes = [c.strip() for c in args.classes.split(",")]
    res = {"kind": "latency", "mode": "loaded", "model": str(args.model), "classes": classes,
           "batch": 1, "image": "640x480 synthetic", "background": n, "iters": args.iters,
           "ref_iters": args.ref_iters, "errors": {}, "phases": {}}
    paths = _paths(args, model, synthetic_image(640, 480, seed=7), classes, args.caption or None, res)
    res["phases"]["idle"] = run_phase(paths, "idle")
    sessions = getattr(args, "neighbour_sessions", "shared")  # contention.SESSIONS
    if n:
        # pinned (--cpus): the neighbours keep the CPUs this process had, as other programs would
        cpus = (getattr(args, "pinned", None) or {}).get("before")
        with busy_neighbours(n, cpus=cpus, own_sessions=sessions == "own") as procs:
            time.sleep(SETTLE_S)
            res["phases"]["loaded"] = run_phase(paths, "loaded")
            res["phases"]["loaded"]["neighbours_running"] = sum(p.poll() is None for p in procs)
    apply(args.num_threads)  # the machine record names the policy's threads, not the last path's
    res["paths"] = {p.name: {"kind": p.kind, "backend": p.backend, **p.results} for p in paths}
    res["machine"] = {"background": n}
    if n:
        res["neighbour_sessions"] = sessions
        res["machine"]["autogroup"] = autogroup_enabled()
    return res


# ----------------------------------------------------------------------------- table
def loaded_table(res: dict) -> str:
    """Idle ms, loaded ms and their ratio per path; the phases' load; the comparisons."""
    n = res.get("background", 0)
    phases = ["idle", "loaded"] if n else ["idle"]
    own = " (each in a session of its own)" if res.get("neighbour_sessions") == "own" else ""
    beside = f" and beside {n} busy neighbour process{'es' * (n > 1)}{own}" if n else ""
    lines = [f"\n**Latency idle{beside}** ({res['model']}, {res.get('device')}, {res.get('dtype')}, "
             f"batch 1, {len(res['classes'])} classes, {res['image']}) - total ms, median of "
             f"{res['iters']}" + (f" (reference: {res['ref_iters']})" if "reference" in res["paths"] else "")
             + "\n",
             "| path | threads | idle ms |" + (" loaded ms | loaded / idle | fair share | loaded / fair |"
                                               if n else ""),
             "|---|---|---|" + ("---|---|---|---|" if n else "")]
    for name, p in res["paths"].items():
        idle = p["idle"]["total"]["median"]
        row = f"| {name} | {p['idle']['threads']} ({p['idle']['thread_source']}) | {idle:.1f} |"
        if n:
            loaded = p["loaded"]["total"]["median"]
            fair = _fair(res, p)
            row += (f" {loaded:.1f} | **{loaded / idle:.2f}x** | "
                    + (f"{fair:.2f}x | {loaded / idle / fair:.2f} |" if fair else "- | - |"))
        lines.append(row)
    lines += [f"\n**{k}**: not run ({v})" for k, v in res.get("errors", {}).items()]
    lines += ["", "| phase | load average before | after | CPU s per wall s (this process) |",
              "|---|---|---|---|"]
    for ph in phases:
        r = res["phases"][ph]
        name = f"loaded ({n} neighbour{'s' * (n > 1)})" if ph == "loaded" else ph
        lines.append(f"| {name} | {r['load_before'][0]:.2f} | {r['load_after'][0]:.2f} | "
                     f"{r['cpu_s'] / r['wall_s']:.2f} |")
    lines += [""] + _idle_warning(res) + _thread_lines(res, phases) + _reference_lines(res, phases)
    lines += _stage_lines(res) + _affinity_line(res) + ["", *TERMS]
    return "\n".join(lines)


def _fair(res: dict, path: dict) -> float | None:
    """The path's fair-share ratio (contention.fair_share_ratio) from its idle CPU rate; None
    when the run was pinned (the neighbours then had other CPUs than the path) or predates it."""
    machine = res.get("machine") or {}
    if machine.get("pinned"):
        return None
    cores = len(machine.get("affinity") or []) or machine.get("cores")
    idle = path["idle"]
    per_group = res.get("neighbour_sessions") == "own" and machine.get("autogroup") is not False
    return fair_share_ratio(idle.get("cpu_per_wall"), idle["threads"], res.get("background", 0), cores,
                            per_group=per_group)


def _idle_warning(res: dict) -> list[str]:
    """A line when the idle phase began with more runnable processes than the machine has cores
    (the load average counts the whole machine): its column is not an idle machine's."""
    cores = (res.get("machine") or {}).get("cores")
    load = res["phases"]["idle"]["load_before"][0]
    if not cores or load <= cores:
        return []
    return [f"The idle phase began at load average {load:.2f}, above the machine's {cores} core(s): "
            "its column is this machine's speed under someone else's load, not an idle machine's."]


def _thread_lines(res: dict, phases: list[str]) -> list[str]:
    """Per backend timed with several thread counts, per phase: which count was fastest."""
    by_backend = {}
    for p in res["paths"].values():
        if p["kind"] == "ours":
            by_backend.setdefault(p["backend"], []).append(p)
    lines = []
    for backend, ps in by_backend.items():
        if len(ps) < 2:
            continue
        for ph in phases:
            timed = sorted((p[ph]["total"]["median"], p[ph]["threads"]) for p in ps)
            (best, t_best), rest = timed[0], timed[1:]
            others = ", ".join(f"{_threads(t)} {ms / best:.2f}x slower ({ms:.0f} ms)" for ms, t in rest)
            lines.append(f"- {backend}, {ph}: fastest with **{_threads(t_best)}** ({best:.0f} ms); {others}")
    return lines


def _reference_lines(res: dict, phases: list[str]) -> list[str]:
    """How many times faster than the reference each of our paths is, per phase."""
    ref = res["paths"].get("reference")
    if not ref:
        return []
    lines = []
    for name, p in res["paths"].items():
        if p["kind"] == "ours":
            ratios = ", ".join(f"{ph} **{ref[ph]['total']['median'] / p[ph]['total']['median']:.1f}x**"
                               for ph in phases)
            lines.append(f"- reference / {name}: {ratios}")
    return lines


def _stage_lines(res: dict) -> list[str]:
    """Per path of ours, each stage's loaded / idle ratio: which stage suffers from contention."""
    lines = []
    for name, p in res["paths"].items():
        if p["kind"] != "ours" or "loaded" not in p:
            continue
        parts = [f"{k} {p['loaded'][k]['median'] / p['idle'][k]['median']:.2f}x" for k in STAGES
                 if k in p["idle"] and p["idle"][k]["median"] >= 1.0]
        lines.append(f"- {name}, loaded / idle by stage: " + ", ".join(parts))
    return lines


def _affinity_line(res: dict) -> list[str]:
    pinned = (res.get("machine") or {}).get("pinned")
    if not pinned:
        return []
    where = "; the busy neighbours ran on all of the latter" if res.get("background") else ""
    return [f"- pinned (--cpus {pinned['requested']}): CPUs {pinned['cpus']} of {pinned['before']}{where}"]


#: One line per term of the table, printed under it.
TERMS = (
    "- idle / loaded: the same calls timed first with no process of this run beside them, then "
    "beside N busy neighbours (pure-CPU Python processes started and stopped by this run).",
    "- loaded / idle: how much slower a path got beside the neighbours; on C cores with T threads "
    "a fair share gives (N + T) / C to a call that is parallel throughout (two neighbours, 2 "
    "threads, 2 cores: 2x; 1 thread: 1.5x), less to one with single-threaded parts.",
    "- fair share: the loaded / idle ratio an equal share per runnable thread would give this path, "
    "from its idle CPU seconds per wall second (the single-threaded part of the call costs "
    "(N + 1) / C, the parallel part (N + T) / C; with neighbours in sessions of their own, an "
    "equal share per session: T (N + 1) / C; faseg_rt/bench/contention.py fair_share_ratio); "
    "loaded / fair: 1.00 = every loss is the share, above 1 = lost beyond it (threads waiting at "
    "barriers for a partner whose core runs a neighbour), below 1 = the scheduler gave more.",
    "- threads: torch's intra-op threads and who chose them (faseg_rt/threads.py: affinity, "
    "cgroup, explicit, ...); onnxruntime's sessions get as many threads, set when they are "
    "made (the --also-threads rows time the torch backend only).",
    "- CPU s per wall s: CPU time this process got per second of the phase (2.0 = two cores).",
    "- reference: the literal published method (faseg_rt/method/reference.py) on the same image.",
)
