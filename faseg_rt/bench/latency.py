"""Latency benchmark: per-stage ms at batch 1 for the fast path, the literal reference and the
network-only floor, in one run; with --background N / --also-threads, each path idle and
loaded instead (loaded.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from faseg_rt.bench.common import (
    STAGES,
    compared_dtypes,
    hard_memory_mb,
    load_segmenter,
    machine_info,
    reference_hard_memory_mb,
    resolve_model,
)
from faseg_rt.bench.frontend import FRONT_STAGES, frontend_table, load_frontend, time_frontend_batching
from faseg_rt.bench.timers import time_network_floor, time_reference, time_segmenter


def latency(args) -> dict:
    """The per-stage run; with --background N or --also-threads, the idle / loaded run (loaded.py)."""
    from faseg_rt.bench.loaded import loaded_latency, wanted
    from faseg_rt.testing import synthetic_image

    if wanted(args):
        return loaded_latency(args)

    cache = Path(args.cache)
    model = resolve_model(args.model, cache)
    image = synthetic_image(640, 480, seed=7)
    classes = [c.strip() for c in args.classes.split(",")]
    caption = args.caption or None
    results = {"kind": "latency", "model": str(args.model), "classes": classes, "batch": 1,
               "image": "640x480 synthetic", "backends": {}}
    seg = front = None
    auto = {} if args.frontend == "none" else {"caption": "auto", "candidates": "auto"}
    runs = [(b, dt) for b in args.backends.split(",") for dt in compared_dtypes(args.dtype)]
    for backend, dtype in runs:
        name = backend if len(runs) == len(args.backends.split(",")) else f"{backend} {dtype}"
        try:
            seg = load_segmenter(args, model, backend, dtype)
        except Exception as e:  # report, keep measuring the others
            results["backends"][name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"[bench] {name}: not available: {e}", file=sys.stderr)
            continue
        print(f"[bench] {name}: timing {args.iters} iterations ...", file=sys.stderr)
        if auto:  # random BLIP + SigLIP, built once, on this segmenter's device, in its policy's dtypes
            front = front or load_frontend(args.frontend, seg.device, seg.precision, len(classes))
            seg.frontend = front
            results["frontend"] = args.frontend
        r = time_segmenter(seg, image, classes, auto.get("caption", caption), args.warmup,
                           args.iters, candidates=auto.get("candidates"))
        r["floor"] = time_network_floor(seg, args.warmup, args.iters)
        r["dtype"] = str(seg.dtype).removeprefix("torch.")
        results["backends"][name] = r
        results["device"] = str(seg.device)
        results["dtype"] = r["dtype"]
        results["machine"] = machine_info(seg.device)
        print(f"[bench] {backend}: {r['total']['median']:.1f} ms per image, network-only floor "
              f"{r['floor']['median']:.1f} ms", file=sys.stderr)
    if front is not None:
        print("[bench] front end: batching ...", file=sys.stderr)
        sizes = [int(b) for b in args.frontend_batch_sizes.split(",")]
        results["frontend_batching"] = time_frontend_batching(front, image, classes, seg.device,
                                                              seg.precision, sizes, max(1, args.iters))
    if args.reference:
        print("[bench] reference: timing ...", file=sys.stderr)
        results["reference"] = time_reference(model, image, classes, caption, max(1, args.ref_iters))
    if seg is not None and args.memory:
        from faseg_rt.images import preprocess

        text = seg.encode_text(classes, caption)
        summ = seg.attention_summaries(preprocess([image], 512), [text])
        results["hard_memory_mb"] = {f"K={k}": hard_memory_mb(seg, k, summ) for k in (20, 150)}
        if args.reference:
            results["reference_hard_memory_mb"] = {"K=20": reference_hard_memory_mb(summ, 20)}
    return results


def latency_table(res: dict) -> str:
    """The per-stage table (or the idle / loaded one, for a result of that run)."""
    if res.get("mode") == "loaded":
        from faseg_rt.bench.loaded import loaded_table

        return loaded_table(res)
    lines = []
    ref = res.get("reference")
    for name, r in res["backends"].items():
        if "error" in r:
            lines.append(f"\n**{name}**: not run ({r['error']})\n")
            continue
        lines.append(f"\n**{name}** ({res.get('device')}, {r.get('dtype', res.get('dtype'))}, batch 1, "
                     f"{len(res['classes'])} classes) - ms, median (p90)\n")
        lines.append("| stage | ms | share |")
        lines.append("|---|---|---|")
        tot = r["total"]["median"]
        for k in [k for k in STAGES + FRONT_STAGES if k in r]:
            v = r[k]
            lines.append(f"| {k} | {v['median']:.1f} ({v['p90']:.1f}) | {100 * v['median'] / tot:.0f} % |")
        lines.append(f"| **total** | **{tot:.1f}** ({r['total']['p90']:.1f}) | 100 % |")
        floor = r["floor"]["median"]
        lines.append(f"| network-only floor | {floor:.1f} | overhead above floor: "
                     f"{100 * (tot - floor) / floor:.0f} % |")
        if ref:
            hard_ttf = r["hard"]["median"] + r["ttf"]["median"]
            lines.append(f"| reference total | {ref['total']['median']:.1f} | fast is "
                         f"**{ref['total']['median'] / tot:.1f}x** faster |")
            lines.append(f"| reference HARD+TTF | {ref['hard_ttf']['median']:.1f} | fast HARD+TTF "
                         f"({hard_ttf:.1f} ms) is **{ref['hard_ttf']['median'] / hard_ttf:.1f}x** faster |")
    lines += _dtype_ratios(res)
    if "hard_memory_mb" in res:
        mem = ", ".join(f"{k}: {v:.1f} MB" for k, v in res["hard_memory_mb"].items())
        ref_mem = res.get("reference_hard_memory_mb")
        tail = f"; reference HARD+TTF at K=20: {ref_mem['K=20']:.1f} MB" if ref_mem else ""
        lines.append(f"\nHARD+TTF extra memory (peak live tensors): {mem}{tail}")
    if "frontend_batching" in res:
        lines.append(frontend_table(res))
    lines += ["", *TERMS]
    return "\n".join(lines)


#: One line per term of the latency table, printed under it.
TERMS = (
    "- network-only floor: the four network passes alone (text encoder, VAE encoder, UNet "
    "inversion and reconstruction) on the same shapes, which any FA-Seg implementation pays.",
    "- HARD+TTF: the method's work after the networks: hierarchical attention refinement (HARD) "
    "and test-time flipping (TTF: the mirrored image's maps averaged in, then thresholded).",
    "- reference: the literal published method (dense 4096 x 4096 matrices, per-class loops; "
    "faseg_rt/method/reference.py) on the same image.",
)


def _dtype_ratios(res: dict) -> list[str]:
    """One line per backend timed in float32 and another dtype in this run: the speed-up."""
    runs = {k: r for k, r in res["backends"].items() if "error" not in r}
    lines = []
    for name, r in runs.items():
        base = runs.get(name.rsplit(" ", 1)[0] + " fp32")
        if base is None or base is r:
            continue
        t, t32 = r["total"]["median"], base["total"]["median"]
        f, f32 = r["floor"]["median"], base["floor"]["median"]
        lines.append(f"\n{name} vs fp32: call **{t32 / t:.2f}x** faster ({t32:.0f} -> {t:.0f} ms), "
                     f"network floor {f32 / f:.2f}x ({f32:.0f} -> {f:.0f} ms)")
    return lines
