"""Batch invariance benchmark: what batch-invariant answers cost, and how far shared batching
strays from single calls.

For each latent grid of --latents (8: 64 px, 16: 128 px, 64: the published 512 px method) one
Segmenter segments the same --images synthetic pictures (320 x 240, two vocabularies of 5 and 3
classes and a caption on every other picture, so a batch mixes class lists and captions) three
ways in one process:

- single calls (`seg(image, ...)`): the answers every other row is compared with;
- segment_batch with batch_invariant=True (the default): each image alone through the networks;
- segment_batch with batch_invariant=False, --batch-size images sharing each network pass.

The two batched ways alternate for --repeats rounds after one warm-up each, and the fastest
round of each is kept (the machine is shared: the fastest is the least disturbed).  Reported:
images/s of both and their ratio (what invariance costs), the process's CPU seconds per image of
both (less sensitive than the wall clock to other processes), and each way's disagreement with
the single calls: images whose label map differs anywhere, differing pixels in all, and the
most in one image.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from faseg_rt.bench.common import load_segmenter, resolve_model

VOCABULARIES = (["cat", "dog", "sky", "grass", "car"], ["person", "tree", "road"])


def _inputs(n: int):
    from faseg_rt.testing import synthetic_image

    images = [synthetic_image(320, 240, seed=2000 + i) for i in range(n)]
    classes = [VOCABULARIES[1 if i % 3 == 2 else 0] for i in range(n)]
    captions = [None if i % 2 else f"picture {i}" for i in range(n)]
    return images, classes, captions


def _disagreement(results, singles) -> dict:
    diff = [int((r.labels != s.labels).sum()) for r, s in zip(results, singles)]
    pixels = sum(s.labels.size for s in singles)
    return {"images_differing": sum(d > 0 for d in diff), "pixels_differing": sum(diff),
            "pixel_fraction": sum(diff) / pixels, "max_pixels_one_image": max(diff)}


def measure_grid(seg, n: int, batch_size: int, repeats: int) -> dict:
    """Images/s of both batchings and their disagreement with single calls, on one Segmenter."""
    images, classes, captions = _inputs(n)
    seg(images[0], classes=classes[0], caption=captions[0])  # warm-up
    singles = [seg(im, classes=c, caption=cap) for im, c, cap in zip(images, classes, captions)]
    best = {True: float("inf"), False: float("inf")}
    cpu = dict(best)
    out = {}
    for _ in range(repeats + 1):  # the first round is a warm-up of each way
        for invariant in (True, False):
            t0, c0 = time.perf_counter(), time.process_time()
            res = seg.segment_batch(images, classes, captions=captions, batch_size=batch_size,
                                    batch_invariant=invariant)
            wall, spent = time.perf_counter() - t0, time.process_time() - c0
            if invariant not in out:
                out[invariant] = _disagreement(res, singles)
            else:
                best[invariant], cpu[invariant] = min(best[invariant], wall), min(cpu[invariant], spent)
    return {"images": n, "batch_size": batch_size,
            "invariant_img_per_s": n / best[True], "shared_img_per_s": n / best[False],
            "invariant_vs_shared": best[False] / best[True],
            "invariant_cpu_s_per_img": cpu[True] / n, "shared_cpu_s_per_img": cpu[False] / n,
            "invariant_vs_shared_cpu": cpu[False] / cpu[True],
            "invariant": out[True], "shared": out[False]}


def batching(args) -> dict:
    """One row per latent grid (same process, same model)."""
    from faseg_rt.segmenter import Segmenter
    from faseg_rt.testing import small_config

    model = resolve_model(args.model, Path(args.cache))
    seg = load_segmenter(args, model)
    res = {"kind": "batching", "model": args.model, "device": str(seg.device),
           "dtype": str(seg.dtype).removeprefix("torch."), "rows": []}
    for latent in (int(x) for x in args.latents.split(",")):
        grid = Segmenter(seg.backend, seg.tokenizer, None if latent == 64 else small_config(latent))
        print(f"[bench] latent {latent} ...", file=sys.stderr)
        res["rows"].append({"latent": latent, "image_size": grid.config.image_size,
                            **measure_grid(grid, args.images, args.batch_size, args.repeats)})
    return res


def batching_table(res: dict) -> str:
    lines = [f"Batch invariance ({res['model']}, {res.get('device')}, {res.get('dtype')})\n",
             "| input | images | batch | invariant img/s | shared img/s | invariant / shared | "
             "CPU s per image: invariant, shared (ratio) | shared: images differing | "
             "shared: pixels differing (max in one image) | invariant: pixels differing |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        s, i = r["shared"], r["invariant"]
        lines.append(
            f"| {r['image_size']} px | {r['images']} | {r['batch_size']} | {r['invariant_img_per_s']:.2f} | "
            f"{r['shared_img_per_s']:.2f} | {r['invariant_vs_shared']:.2f} | "
            f"{r['invariant_cpu_s_per_img']:.3f}, {r['shared_cpu_s_per_img']:.3f} "
            f"({r['invariant_vs_shared_cpu']:.2f}) | {s['images_differing']} of {r['images']} | "
            f"{s['pixels_differing']} = "
            f"{100 * s['pixel_fraction']:.3f} % ({s['max_pixels_one_image']}) | "
            f"{i['pixels_differing']} |")
    return "\n".join([*lines, "", *TERMS])


#: One line per term of the table, printed under it.
TERMS = (
    "- invariant: segment_batch's default (batch_invariant=True), each image alone through the "
    "networks; shared: batch_invariant=False, `batch` images per network pass.",
    "- img/s: the fastest of the timed rounds (320 x 240 pictures resized to the input size, "
    "two vocabularies and captions mixed in each batch); invariant / shared: the share of "
    "shared batching's rate that invariance keeps.",
    "- CPU s per image: this process's CPU time (all its threads) of the least costly round, per "
    "image; (ratio) = shared / invariant.  On a shared machine it moves less than the wall "
    "clock, which other processes stretch.",
    "- differing: label maps against single `Segmenter.__call__`s of the same inputs "
    "(the invariant column must be 0).",
)
