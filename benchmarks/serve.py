"""`faseg-rt serve` under load: throughput and p50 / p95 / p99 latency against the number of
concurrent clients and --max-batch-size, beside the same images through `segment_batch` in this
process (the service's overhead).

Usage: python benchmarks/serve.py [--model tiny|full|DIR] [--latent 16] [--batch-sizes 1,4]
       [--batching invariant,shared] [--concurrency 1,4,8] [--requests 16] [--threads 2]
       [--replicas 1,2] [--device cpu|cuda] [--dtype float16]
       [--out benchmarks/results/serve-tiny-cpu.json]

Starts a local Ray (--threads CPUs) and Serve on 127.0.0.1 only (a free port), deploys the
application once per replica count, batching mode and max batch size (--replicas, default 1;
each replica gets --threads // replicas torch threads and as many Ray CPUs) and drives it with a
bounded asyncio client: exactly --requests POST /v1/segment calls per point, at most C in flight,
each a distinct synthetic 320 x 240 image with the same 5 classes.  Latency is the client's
(send to last byte); throughput is requests / wall time of the point; "mean batch" is what the
replica's /v1/stats counted during the point.  After the service is stopped, the same images go
through `Segmenter.segment_batch` in this process with the same threads, batch sizes and
batching (batch_invariant=True for "invariant", False for "shared").
--latent 16 runs the method on 128 px inputs (the tests' small config: every stage, far cheaper
on a CPU); --latent 64 is the real 512 px method.  Everything started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLASSES = "cat,dog,sky,grass,car"


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile of xs (q in [0, 100])."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))]


async def drive(url: str, bodies: list[bytes], concurrency: int, timeout_s: float) -> dict:
    """POST every body once, at most `concurrency` in flight; latencies of the 200s, codes."""
    import aiohttp

    todo = list(range(len(bodies)))
    lat, codes = [], {}

    async def client(session):
        while todo:
            i = todo.pop()
            form = aiohttp.FormData()
            form.add_field("image", bodies[i], filename=f"{i}.png", content_type="image/png")
            form.add_field("classes", CLASSES)
            t0 = time.perf_counter()
            async with session.post(url + "/v1/segment", data=form) as r:
                await r.read()
                codes[r.status] = codes.get(r.status, 0) + 1
                if r.status == 200:
                    lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "codes": codes, "img_per_s": len(lat) / wall,
            **{f"p{q}_ms": 1000 * percentile(lat, q) for q in (50, 95, 99)}}


def _stats(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "/v1/stats", timeout=60) as r:
        return json.loads(r.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_points(args, model, config, bodies) -> list[dict]:
    import ray
    from ray import serve

    from faseg_rt.serve.app import build_app
    from faseg_rt.serve.run import wait_loaded

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ray.init(num_cpus=max(args.threads, 2), include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    rows = []
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for r, mode, b in ((r, m, b) for r in args.replicas for m in args.batching for b in args.batch_sizes):
            gpu = args.device.startswith("cuda")
            threads = max(1, args.threads // r)  # the same CPUs split between the replicas
            app = build_app(str(model), config=config, device=args.device, dtype=args.dtype,
                            max_batch_size=b, batch_wait_ms=args.batch_wait_ms, max_queued=10_000,
                            replicas=r, num_threads=threads, num_cpus=1.0 if gpu else float(threads),
                            num_gpus=1.0 if gpu else 0.0, batching=mode)
            wait_loaded(serve.run(app, name="faseg-bench", route_prefix="/", blocking=False), 1800, replicas=r)
            asyncio.run(drive(url, bodies[:2 * r], r, args.timeout_s))  # warm-up, every replica
            for c in args.concurrency:
                before = _stats(url)
                point = asyncio.run(drive(url, bodies, c, args.timeout_s))
                after = _stats(url)
                batches = after["batches"] - before["batches"]
                # /v1/stats is one replica's: with several, two calls may reach different ones
                mean = (after["requests"] - before["requests"]) / max(1, batches) if r == 1 else None
                point.update(replicas=r, threads_per_replica=threads, batching=mode, max_batch_size=b,
                             clients=c, requests=len(bodies), mean_batch=mean)
                print(json.dumps(point), flush=True)
                rows.append(point)
            # gone before the next deploys: an update would keep these replicas' CPUs until the
            # new ones run, and new ones that need those CPUs would never be scheduled
            serve.delete("faseg-bench")
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def in_process_points(args, model, config, images) -> list[dict]:
    from faseg_rt.segmenter import Segmenter
    from faseg_rt.threads import apply

    apply(args.threads)  # as each replica does (explicit: the replicas get num_threads=args.threads)
    seg = Segmenter.from_pretrained(model, device=args.device, dtype=args.dtype, config=config)
    seg.segment_batch(images[:2], CLASSES.split(","), batch_size=1, return_scores=False)  # warm-up
    rows = []
    for mode, b in ((m, b) for m in args.batching for b in args.batch_sizes):
        t0 = time.perf_counter()
        seg.segment_batch(images, CLASSES.split(","), batch_size=b, return_scores=False,
                          batch_invariant=mode == "invariant")
        wall = time.perf_counter() - t0
        rows.append({"batching": mode, "batch_size": b, "img_per_s": len(images) / wall, "wall_s": wall})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(res: dict) -> str:
    base = {(r["batching"], r["batch_size"]): r["img_per_s"] for r in res["in_process"]}
    lines = ["| replicas x threads | batching | max batch | clients | img/s | in-process img/s (same batch) | "
             "service / in-process | p50 ms | p95 ms | p99 ms | mean batch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["service"]:
        b, m, mean = r["max_batch_size"], r.get("batching", "invariant"), r.get("mean_batch")
        shape = f"{r.get('replicas', 1)} x {r.get('threads_per_replica', res['args']['threads'])}"
        lines.append(f"| {shape} | {m} | {b} | {r['clients']} | {r['img_per_s']:.2f} | {base[m, b]:.2f} | "
                     f"{r['img_per_s'] / base[m, b]:.2f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
                     f"{r['p99_ms']:.0f} | {'-' if mean is None else f'{mean:.2f}'} |")
    return "\n".join(lines + ["", f"In-process: one Segmenter with {res['args']['threads']} thread(s); "
                               "mean batch '-' with several replicas (/v1/stats is one replica's)."])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p.add_argument("--model", default="tiny", help="tiny | full | a model directory")
    p.add_argument("--latent", type=int, default=16, help="latent grid: 16 (128 px) or 64 (512 px)")
    p.add_argument("--batch-sizes", type=ints, default=[1, 4])
    p.add_argument("--batching", type=lambda s: s.split(","), default=["invariant"],
                   help="comma-separated: invariant (the default service), shared (--batching shared)")
    p.add_argument("--concurrency", type=ints, default=[1, 4, 8])
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="CPUs in all: split between the replicas")
    p.add_argument("--replicas", type=ints, default=[1],
                   help="replica counts to compare, e.g. 1,2: each replica gets threads // replicas "
                        "torch threads and as many Ray CPUs (default: 1)")
    p.add_argument("--batch-wait-ms", type=float, default=50.0)
    p.add_argument("--timeout-s", type=float, default=3600.0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (one replica on one GPU)")
    p.add_argument("--dtype", default="float32", help="float32 or float16 (cuda)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from faseg_rt.bench.common import machine_info, resolve_model, with_provenance
    from faseg_rt.testing import small_config, synthetic_image

    model = resolve_model(args.model, Path.home() / ".cache" / "faseg_rt")
    config = None if args.latent == 64 else small_config(args.latent)
    images = [synthetic_image(320, 240, seed=1000 + i) for i in range(args.requests)]
    bodies = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        bodies.append(buf.getvalue())
    load_before = os.getloadavg()
    res = {"args": vars(args), "service": service_points(args, model, config, bodies)}
    res["in_process"] = in_process_points(args, model, config, images)
    # CPU, ISA, threads, load before and after; a heading when the load exceeded the CPUs used
    res["machine"] = machine_info(args.device, load_before=load_before)
    res["markdown"] = with_provenance(table(res), res["machine"])
    print(res["markdown"])
    where = "gpu" if args.device.startswith("cuda") else "cpu"
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"serve-{args.model}-{where}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
