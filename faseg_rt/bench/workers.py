"""Label throughput by workers and threads: `faseg-rt label` on the same images as W workers x T
torch threads each, for several (W, T) in one run (issue 33 item 4: on 2 cores, 2 workers x 1
thread against 1 worker x 2 threads).

Each setting runs the real command in a fresh process (`python -m faseg_rt.cli label ...
--ray-address local --num-workers W --threads T`): it starts its own local Ray, which splits
the machine's CPUs between the W workers (label's own plan), and each worker applies T threads.
The images are synthetic 320 x 240 pictures, 5 classes, written once to a temporary folder, and
every setting labels all of them into a fresh output folder.  While a run goes, the driver's
manifest is polled; the time of each new row gives the rate once masks flow ("images/s after
the first": (n - 1) / (last row - first row), free of Ray's start and the model loads, which the
wall time includes).  Settings run in the order given, --rounds times over (interleaved, so a
drift of the machine's load touches each alike); each run records the load average before and
after it.  --latent 8 runs every stage on 64 px inputs (a smoke test); 64 is the real method.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faseg_rt.bench.common import resolve_model

CLASSES = "sky,ball,box,person,tree"


def parse_settings(text: str) -> list[tuple[int, int]]:
    """'2x1,1x2' -> [(2, 1), (1, 2)]: (workers, threads per worker), each at least 1."""
    out = []
    for part in text.split(","):
        w, _, t = part.strip().lower().partition("x")
        if not (w.isdigit() and t.isdigit() and int(w) >= 1 and int(t) >= 1):
            raise ValueError(f"a setting is WORKERSxTHREADS, e.g. 2x1, got {part.strip()!r}")
        out.append((int(w), int(t)))
    return out


def rates(row_times: list[float], wall_s: float) -> dict:
    """images/s after the first row and over the whole wall time, from the rows' arrival times."""
    n = len(row_times)
    steady = (n - 1) / (row_times[-1] - row_times[0]) if n > 1 and row_times[-1] > row_times[0] else None
    return {"images": n, "first_row_s": row_times[0] if row_times else None,
            "images_per_s_after_first": steady, "images_per_s_wall": n / wall_s if wall_s > 0 else None}


def label_run(argv: list[str], manifest: Path, log: Path, timeout_s: float) -> tuple[list[float], float, int]:
    """Run the label command argv; (arrival second of each manifest row, wall seconds, exit code).
    Killed with everything it started (its local Ray) when it outlives timeout_s."""
    from faseg_rt.testing.ray_cluster import kill_tree, small_env

    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=small_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    times = []
    try:
        while proc.poll() is None and time.perf_counter() - t0 < timeout_s:
            try:
                n = manifest.read_bytes().count(b"\n")
            except FileNotFoundError:
                n = 0
            times += [time.perf_counter() - t0] * (n - len(times))
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            kill_tree(proc, 9)
    wall = time.perf_counter() - t0
    n = manifest.read_bytes().count(b"\n") if manifest.exists() else 0
    times += [wall] * (n - len(times))  # rows written in its last 50 ms
    return times, wall, proc.returncode


def _one(args, listing: Path, model, config, work: Path, workers: int, threads: int) -> dict:
    from faseg_rt.testing.ray_cluster import label_command

    out = work / f"out-{workers}x{threads}"
    shutil.rmtree(out, ignore_errors=True)
    argv = label_command(str(listing), "--classes", CLASSES, "--out", str(out), "--model", str(model),
                         "--device", "cpu", "--dtype", "float32", "--quiet", "--ray-address", "local",
                         "--num-workers", str(workers), "--threads", str(threads),
                         *(["--config", str(config)] if config else []))
    print(f"[bench] label: {workers} worker(s) x {threads} thread(s) ...", file=sys.stderr)
    load_before = os.getloadavg()
    times, wall, rc = label_run(argv, out / "manifest.jsonl", work / "label.log", args.timeout_s)
    run = {"workers": workers, "threads": threads, "wall_s": wall, "exit_code": rc,
           "load_before": list(load_before), "load_after": list(os.getloadavg()), **rates(times, wall)}
    if rc != 0:
        run["error"] = (work / "label.log").read_text(errors="replace")[-2000:]
        print(f"[bench] label failed (exit {rc}):\n{run['error']}", file=sys.stderr)
    return run


def workers(args) -> dict:
    """Every setting --rounds times on the same images; the result dict of the JSON."""
    from faseg_rt.testing import write_small_config, write_synthetic_images

    settings = parse_settings(args.settings)
    model = resolve_model(args.model, Path(args.cache))
    work = Path(tempfile.mkdtemp(prefix="faseg-bench-workers-"))
    try:
        images = write_synthetic_images(work / "in", args.images, seed=500, width=320, height=240)
        listing = work / "inputs.txt"
        listing.write_text("".join(f"{p}\n" for p in images))
        config = None if args.latent == 64 else write_small_config(work / "small.json", args.latent)
        runs = [_one(args, listing, model, config, work, w, t)
                for _ in range(args.rounds) for w, t in settings]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"kind": "workers", "model": str(args.model), "images": args.images, "latent": args.latent,
            "image_px": 8 * args.latent, "classes": CLASSES.split(","), "device": "cpu",
            "dtype": "float32", "rounds": args.rounds, "settings": [f"{w}x{t}" for w, t in settings],
            "runs": runs}


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(v, spec=".2f") -> str:
    return "-" if v is None else format(v, spec)


def workers_table(res: dict) -> str:
    """Per setting: images/s after the first mask and over the wall time (medians over rounds)."""
    lines = [f"\n**faseg-rt label: workers x threads** ({res['model']}, {res['device']}, {res['dtype']}, "
             f"{res['images']} images at {res['image_px']} px, {len(res['classes'])} classes, "
             f"{res['rounds']} round(s), medians)\n",
             "| workers x threads | images/s after the first | images/s over the wall | wall s | "
             "first mask s | load before -> after |", "|---|---|---|---|---|---|"]
    steady = {}
    for name in res["settings"]:
        w, t = parse_settings(name)[0]
        rs = [r for r in res["runs"] if (r["workers"], r["threads"]) == (w, t)]
        ok = [r for r in rs if r["exit_code"] == 0]
        if not ok:
            lines.append(f"| {w} x {t} | failed (exit {rs[0]['exit_code']}) | | | | |")
            continue
        steady[name] = _median(r["images_per_s_after_first"] for r in ok)
        load = f"{ok[0]['load_before'][0]:.1f} -> {ok[-1]['load_after'][0]:.1f}"
        lines.append(f"| {w} x {t} | {_fmt(steady[name], '.3f')} | "
                     f"{_fmt(_median(r['images_per_s_wall'] for r in ok), '.3f')} | "
                     f"{_fmt(_median(r['wall_s'] for r in ok), '.1f')} | "
                     f"{_fmt(_median(r['first_row_s'] for r in ok), '.1f')} | {load} |")
    known = {k: v for k, v in steady.items() if v}
    if len(known) > 1:
        best = max(known, key=known.get)
        others = ", ".join(f"{known[best] / v:.2f}x {k}" for k, v in known.items() if k != best)
        lines.append(f"\nFastest once masks flow: **{best}** (workers x threads), {others}.")
    return "\n".join([*lines, "", *TERMS])


#: One line per term of the table, printed under it.
TERMS = (
    "- workers x threads: `faseg-rt label --num-workers W --threads T` with a local Ray of its "
    "own (each worker a model of its own and T torch threads).",
    "- images/s after the first: (masks - 1) / (last mask's time - first mask's time): the rate "
    "once every worker is loaded, free of Ray's start-up.",
    "- images/s over the wall: masks / the whole command's time, start-up and model loads included.",
    "- first mask s: from the command's start to the first row of its manifest.",
)
