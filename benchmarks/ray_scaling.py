"""`faseg-rt label` on a real `ray start` cluster: one node against two, and the fixed start-up
cost separated from the per-image cost by a straight-line fit over job sizes.

Usage: python benchmarks/ray_scaling.py [--sizes 8,24] [--out benchmarks/results/ray-scaling-cpu.json]

Starts a head and a worker node on this machine (faseg_rt/testing/ray_cluster.py: `ray start`,
1 CPU each, loopback addresses, its own auth token), builds the tiny model, and runs the real CLI
driver for each job size with --num-workers 1 (one node's worker) and 2 (one worker per node), the tiny
model at the 64 px small config, fresh output each time.  Per run it records the wall time of
the whole command and when each manifest row appeared.  wall(n) = fixed + n * per_image is
fitted by least squares over the sizes; images/s = 1 / per_image.  Everything the script
started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faseg_rt.testing import write_small_config
from faseg_rt.testing.ray_cluster import RayCluster, kill_tree, label_command, small_env

ROOT = Path(__file__).resolve().parent.parent


def fit(sizes: list[int], walls: list[float]) -> tuple[float, float]:
    """Least-squares wall = a + b * n: (a seconds fixed, b seconds per image)."""
    n = len(sizes)
    mx, my = sum(sizes) / n, sum(walls) / n
    b = sum((x - mx) * (y - my) for x, y in zip(sizes, walls)) / sum((x - mx) ** 2 for x in sizes)
    return my - b * mx, b


def one_run(cluster, images: list[Path], workers: int, model: Path, config: Path, out: Path,
            log: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    listing = out.with_name("inputs.txt")
    listing.write_text("".join(f"{p}\n" for p in images))
    args = [str(listing), "--classes", "cat,sky", "--out", str(out), "--model", str(model),
            "--config", str(config), "--device", "cpu", "--dtype", "float32", "--quiet",
            "--ray-address", cluster.address, "--num-workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(label_command(*args), env=small_env(), stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    seen, times = 0, []
    try:
        while proc.poll() is None and time.perf_counter() - t0 < 900:
            try:
                n = (out / "manifest.jsonl").read_bytes().count(b"\n")
            except FileNotFoundError:
                n = 0
            times += [time.perf_counter() - t0] * (n - seen)
            seen = max(seen, n)
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            kill_tree(proc, 9)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"label failed (rc {proc.returncode}):\n{log.read_text()[-2000:]}")
    return {"images": len(images), "workers": workers, "wall_s": round(wall, 2),
            "first_row_s": round(times[0], 2) if times else None,
            "last_row_s": round(times[-1], 2) if times else None,
            # the streaming rate once rows flow: free of the start-up cost and its noise
            "rows_per_s_after_first": (round((len(times) - 1) / (times[-1] - times[0]), 2)
                                       if len(times) > 1 and times[-1] > times[0] else None)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="8,24", help="job sizes (images), at least two")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ray-scaling-cpu.json"))
    a = p.parse_args(argv)
    sizes = sorted({int(x) for x in a.sizes.split(",")})
    if len(sizes) < 2:
        p.error("give at least two job sizes to separate fixed from per-image cost")

    from faseg_rt.bench.common import machine_info
    from faseg_rt.testing import build_tiny_model, write_synthetic_images

    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    model = build_tiny_model(work / "tiny")
    pool = write_synthetic_images(work / "in", max(sizes), seed=300)
    config = write_small_config(work / "small.json")  # the 64 px small config

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    cluster = RayCluster(work).start(workers=1)
    cluster_start = time.perf_counter() - t0
    runs = []
    try:
        for n in sizes:
            for workers in (1, 2):
                r = one_run(cluster, pool[:n], workers, model, config, work / "out",
                            work / "run.log")
                print(json.dumps(r), flush=True)
                runs.append(r)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for workers in (1, 2):
        rs = [r for r in runs if r["workers"] == workers]
        a_fixed, b_per = fit([r["images"] for r in rs], [r["wall_s"] for r in rs])
        summary[f"{workers}_node"] = {"fixed_s": round(a_fixed, 2), "per_image_s": round(b_per, 3),
                                      "images_per_s": round(1 / b_per, 2) if b_per > 0 else None}
    result = {"what": "faseg-rt label on a ray-start cluster (1 CPU per node), tiny model at 64 px",
              # CPU, ISA, cores and the load average before and after (the driver's threads: unused)
              "machine": machine_info("cpu", load_before=load_before),
              "cluster_start_s": round(cluster_start, 2), "runs": runs, "fit": summary}
    print(json.dumps(result, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
