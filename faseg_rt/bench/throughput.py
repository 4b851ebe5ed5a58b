"""Throughput benchmark: images/s and peak memory over batch sizes (one subprocess per batch size,
so peak memory is per setting)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from faseg_rt.bench.common import hard_memory_mb, load_segmenter, resolve_model


def throughput(args) -> dict:
    """Images/s over batch sizes, each batch size in a fresh process (honest peak memory)."""
    import subprocess

    results = {"kind": "throughput", "model": args.model, "batches": {}}
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        cmd = [sys.executable, "-m", "faseg_rt.cli.bench", "_throughput_one", "--model", args.model,
               "--batch", str(b), "--images", str(max(b, args.images)), "--backend", args.backend,
               "--cache", args.cache] + (["--device", args.device] if args.device else []) + \
              (["--dtype", args.dtype] if args.dtype else []) + \
              (["--engines", args.engines] if args.engines else []) + \
              (["--threads", str(args.num_threads)] if args.num_threads else [])
        print(f"[bench] batch {b} ...", file=sys.stderr)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            results["batches"][str(b)] = {"error": p.stderr.strip().splitlines()[-1:]}
            continue
        one = json.loads(p.stdout.strip().splitlines()[-1])
        results["device"], results["dtype"] = one.pop("device"), one.pop("dtype")
        results["batches"][str(b)] = one
    return results


def _throughput_one(args) -> None:
    import resource

    from faseg_rt.testing import synthetic_image

    model = resolve_model(args.model, Path(args.cache))
    seg = load_segmenter(args, model, args.backend)
    images = [synthetic_image(320, 240, seed=i) for i in range(args.images)]
    classes = ["sky", "ball", "box", "person", "tree"]
    # shared network passes (batch_invariant=False): what this benchmark measures is batching
    seg.segment_batch(images[:args.batch], classes, batch_size=args.batch, batch_invariant=False)  # warm-up
    if seg.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    seg.segment_batch(images, classes, batch_size=args.batch, batch_invariant=False)
    if seg.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"images": len(images), "seconds": dt, "images_per_s": len(images) / dt,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if seg.device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    # HARD + TTF's own extra memory for this batch at K = 20 (grows as batch x N x K)
    from faseg_rt.images import preprocess

    text = seg.encode_text(classes)
    summ = seg.attention_summaries(preprocess(images[:args.batch], 512), [text] * args.batch)
    out["hard_extra_mb_k20"] = hard_memory_mb(seg, 20, summ)
    out["device"] = str(seg.device)
    out["dtype"] = str(seg.dtype).removeprefix("torch.")
    print(json.dumps(out))


def throughput_table(res: dict) -> str:
    lines = [f"Throughput ({res['model']}, {res.get('device')}, {res.get('dtype')}, 5 classes)\n",
             "| batch | images/s | peak RSS MB | CUDA max alloc MB | HARD+TTF extra MB (K=20) |",
             "|---|---|---|---|---|"]
    for b, r in res["batches"].items():
        if "error" in r:
            lines.append(f"| {b} | error: {r['error']} | | | |")
            continue
        cuda = r.get("cuda_max_allocated_mb")
        lines.append(f"| {b} | {r['images_per_s']:.3f} | {r['peak_rss_mb']:.0f} | "
                     f"{'-' if cuda is None else f'{cuda:.0f}'} | {r['hard_extra_mb_k20']:.0f} |")
    return "\n".join([*lines, "", *TERMS])


#: One line per term of the throughput table, printed under it.
TERMS = (
    "- batch: images through the networks together (segment_batch's batch_size, with shared "
    "batching: batch_invariant=False); each batch size "
    "runs in a fresh process, so its memory columns are its own.",
    "- images/s: images segmented per second after one warm-up batch, 320 x 240 synthetic "
    "pictures resized to 512 px, 5 classes each.",
    "- peak RSS MB: the process's peak resident memory (the whole process: model, torch, batch).",
    "- CUDA max alloc MB: torch's peak GPU allocation during the timed run ('-' on the CPU).",
    "- HARD+TTF extra MB (K=20): the method's own extra memory after the networks (hierarchical "
    "attention refinement and test-time flipping) for one batch at 20 classes; it grows as batch "
    "x pixels x classes.",
)
