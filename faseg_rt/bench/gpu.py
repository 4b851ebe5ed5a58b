"""`faseg-rt bench gpu` / benchmarks/gpu.sh: a time-boxed, resumable benchmark for any CUDA GPU.

    bash benchmarks/gpu.sh OUT                       # preflight, then the default plan, --budget 540
    bash benchmarks/gpu.sh OUT                       # again: steps already ok in OUT are kept
    faseg-rt bench gpu --out OUT --steps eager-b1-full,compiled-b1-full --budget 300
    faseg-rt bench gpu --list                        # the steps and their estimates

1. Preflight (seconds): the imports each step needs, a C compiler for compile, free GPU
   memory; prints what is missing and which wheels to install.  A step whose needs are missing
   is recorded as skipped with the reason, without spending time on it.
2. Steps of one variant x one batch size (faseg_rt/bench/gpu_plan.py), in order, each in its own
   process under a limit of twice its estimate (never past the budget; --dry: the budget); a step writes
   OUT/<step>.json the moment it has a number, so a step killed at its limit keeps its numbers.
3. --budget SECONDS: a step starts only if its estimate fits in what is left (time spent so far,
   counted as at least the estimates of the steps run).  OUT/summary.json and OUT/summary.md
   are rewritten after every step.
4. Resuming: a step already ok in OUT is kept only when it ran with the same --dry, arguments,
   package version and git commit (gpu_plan.run_key); anything else runs again.  --dry and real
   runs default to different folders and never share a kept record or the eager reference.

`--dry` runs the same plan on the CPU with the tiny model, the 64 px config and one iteration;
what needs CUDA is skipped by the preflight with the reason.  CI runs it (tests/test_bench_gpu.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from faseg_rt.bench.gpu_plan import Step, preflight, run_key, select
from faseg_rt.io import atomic_write_bytes, atomic_write_json

#: Where results go by default; --dry runs (a check of the plan, not figures) go to a git-ignored
#: folder of their own.
DEFAULT_OUT, DEFAULT_DRY_OUT = "benchmarks/results/gpu", "faseg-bench/gpu-dry"
#: Keeps one command under 10 minutes (a common limit for a batch job), with one minute left
#: for Python start-up and the summary; pass --budget to fit another limit.
DEFAULT_BUDGET_S = 540


def _run_child(step: Step, args, timeout: float) -> dict:
    """The step in a fresh interpreter under `timeout`; its record (partial if it was killed)."""
    path = Path(args.out) / f"{step.name}.json"
    cmd = [sys.executable, "-m", "faseg_rt.bench.gpu", "_step", step.name, "--out", str(args.out),
           "--cache", args.cache, "--iters", str(args.iters)] + (["--dry"] if args.dry else [])
    try:
        subprocess.run(cmd, timeout=timeout, check=False)
        killed = None
    except subprocess.TimeoutExpired:
        killed = f"killed at its limit of {timeout:.0f} s"
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {"status": "error", "reason": killed or f"the step wrote no result ({type(e).__name__}: {e})"}
    if killed or rec.get("status") == "running":  # what it measured before it stopped is kept
        rec.update(status="timeout" if killed else "error", reason=killed or "the step process died")
        atomic_write_json(path, rec)
    return rec


def _kept(path: Path, key: dict) -> dict | None:
    """A finished step's record from an earlier run into the same OUT, if it succeeded under the
    same key (gpu_plan.run_key: dry flag, arguments, package version, git commit)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if rec.get("status") == "ok" and rec.get("key") == key else None


def run_all(args) -> dict:
    """Preflight, then each selected step within the budget; the summary after each."""
    from faseg_rt.bench.gpu_steps import run_step

    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = select(args.steps, args.dry)
    pre = preflight(steps, args.dry, log=lambda m: print(m, file=sys.stderr))
    summary = {"dry": args.dry, "budget_s": args.budget, "preflight": pre, "steps": {}}
    _write_summary(out, summary)
    charged = pre["seconds"]
    for step in steps:
        path = out / f"{step.name}.json"
        left = args.budget - max(time.perf_counter() - t0, charged)
        key = run_key(step, args)
        kept = None if args.force else _kept(path, key)
        if kept is not None:
            rec = dict(kept, kept=True)
        elif pre["missing"][step.name]:
            rec = {"status": "skipped", "reason": f"preflight: needs {', '.join(pre['missing'][step.name])}"}
        elif step.estimate_s > left:
            rec = {"status": "not started", "reason": f"needs ~{step.estimate_s} s, {max(left, 0):.0f} s "
                                                      "of --budget left; run again with the same OUT"}
        else:
            charged += step.estimate_s
            # estimates are for a GPU; a --dry step on a busy CPU gets what is left of the budget
            limit = left if args.dry else min(2 * step.estimate_s, left)
            rec = run_step(step, args) if args.in_process else _run_child(step, args, limit)
        if kept is None and rec["status"] in ("skipped", "not started"):
            rec = dict(rec, key=key)
            atomic_write_json(path, rec)
        summary["steps"][step.name] = rec
        summary["seconds"] = time.perf_counter() - t0
        _write_summary(out, summary)
    return summary


def _write_summary(out: Path, summary: dict) -> None:
    atomic_write_json(out / "summary.json", summary)
    atomic_write_bytes(out / "summary.md", summary_markdown(summary).encode())


def summary_markdown(summary: dict) -> str:
    """Preflight lines, one table of step statuses, then each step's numbers as JSON."""
    lines = [f"# faseg-rt bench gpu{' (dry run, CPU)' if summary['dry'] else ''}", "",
             f"budget {summary['budget_s']} s; {summary.get('seconds', 0):.0f} s spent", "", "## preflight", ""]
    pre = summary["preflight"]
    lines += [f"- {n}: {state}" for n, state in pre["checks"].items()]
    if pre["carry"]:
        lines.append(f"- wheels to install: {' '.join(pre['carry'])}")
    lines += ["", "| step | status | seconds | note |", "|---|---|---|---|"]
    for name, rec in summary["steps"].items():
        note = (rec.get("reason", "") + (" (kept from an earlier run)" if rec.get("kept") else ""))
        note = note.replace("|", "/").replace("\n", " ")[:140]
        lines.append(f"| {name} | {rec['status']} | {rec.get('seconds', 0):.1f} | {note} |")
    for name, rec in summary["steps"].items():
        if rec.get("result"):
            lines += ["", f"## {name}", "", "```json", json.dumps(rec["result"], indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"


def add_arguments(p) -> None:
    import os
    import tempfile

    p.add_argument("--out", default=None,
                   help=f"folder for the JSON and markdown (default {DEFAULT_OUT}, with --dry {DEFAULT_DRY_OUT})")
    p.add_argument("--dry", action="store_true", help="CPU, tiny model, 64 px config, 1 iteration")
    p.add_argument("--iters", type=int, default=None, help="timed calls per measurement (default 10; dry 1)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "faseg_rt_bench_models"))


def _parser():
    p = argparse.ArgumentParser(prog="faseg-rt bench gpu", description=__doc__.split("\n")[0])
    add_arguments(p)
    p.add_argument("--steps", default="default", help="comma list of steps, 'default' or 'all' (see --list)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                   help=f"seconds; steps whose estimate does not fit are not started (default {DEFAULT_BUDGET_S})")
    p.add_argument("--force", action="store_true", help="rerun steps already ok in OUT")
    p.add_argument("--list", action="store_true", help="print the steps with their estimates and exit")
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # tests
    return p


def _list(args) -> int:
    for s in select("all", args.dry):
        print(f"{s.name:26s} ~{s.estimate_s:4d} s  {'default' if s.default else 'with --steps'}"
              f"  needs: {', '.join(s.needs) or '-'}")
    return 0


def _defaults(args):
    """--iters and --out when not given: dry runs get one iteration and a folder of their own."""
    if args.iters is None:
        args.iters = 1 if args.dry else 10
    if args.out is None:
        args.out = DEFAULT_DRY_OUT if args.dry else DEFAULT_OUT
    return args


def main(argv=None) -> int:
    from faseg_rt.errors import InvalidInputError

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_step"]:  # one step in this process (run_all's child)
        p = argparse.ArgumentParser(prog="faseg_rt.bench.gpu _step")
        p.add_argument("step")
        add_arguments(p)
        args = _defaults(p.parse_args(argv[1:]))
        from faseg_rt.bench.gpu_steps import run_step

        run_step(select(args.step, args.dry)[0], args)
        return 0
    args = _defaults(_parser().parse_args(argv))
    if args.list:
        return _list(args)
    try:
        select(args.steps, args.dry)
        if args.budget <= 0 or args.iters < 1:
            raise InvalidInputError("--budget and --iters must be positive")
    except InvalidInputError as e:
        print(f"faseg-rt bench gpu: {e}", file=sys.stderr)
        return 2
    summary = run_all(args)
    bad = [n for n, r in summary["steps"].items() if r["status"] in ("error", "timeout")]
    print(f"[bench gpu] wrote {args.out}/summary.md" + (f"; errors in {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
