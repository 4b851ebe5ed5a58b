"""Latency benchmark: per-stage ms at batch 1 for the fast path, the literal reference and the
network-only floor, in one run."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from faseg_rt.bench.common import (
    STAGES,
    compared_dtypes,
    hard_memory_mb,
    load_segmenter,
    machine_info,
    reference_hard_memory_mb,
    resolve_model,
    summarize,
)
from faseg_rt.bench.frontend import FRONT_STAGES, frontend_table, load_frontend, time_frontend_batching
from faseg_rt.profiling import record


def time_segmenter(seg, image, classes, caption, warmup: int, iters: int, candidates=None) -> dict:
    """Per-stage and total ms over `iters` calls (text cache cleared: text encoder included).

    With candidates="auto" (and caption="auto") the front end's stages are timed too."""
    stages = STAGES + FRONT_STAGES if candidates is not None else STAGES
    per_stage = {k: [] for k in stages}
    totals = []
    for i in range(warmup + iters):
        seg.clear_text_cache()
        with record() as t:
            t0 = time.perf_counter()
            seg(image, classes=classes, caption=caption, candidates=candidates)
            if torch.device(seg.device).type == "cuda":
                torch.cuda.synchronize()
            total = (time.perf_counter() - t0) * 1e3
        if i < warmup:
            continue
        totals.append(total)
        ms = dict(t.ms)
        ms["postprocess"] = ms.pop("labels", 0.0) + ms.pop("resize", 0.0) + ms.pop("load_image", 0.0)
        for k in stages:
            per_stage[k].append(ms.get(k, 0.0))
    out = {k: summarize(v) for k, v in per_stage.items()}
    out["total"] = summarize(totals)
    return out


def time_network_floor(seg, warmup: int, iters: int) -> dict:
    """The network passes alone (text encoder, VAE encoder, two plain UNet passes) on the
    same shapes: the floor any FA-Seg implementation pays."""
    be = seg.backend
    d = be.dims
    ids = torch.full((2, d.text_len), 49407, dtype=torch.int64, device=be.device)
    pixels = torch.zeros(2, 3, d.image_size, d.image_size, dtype=be.dtype, device=be.device)
    lat = torch.zeros(2, d.latent_channels, d.latent_size, d.latent_size, dtype=be.dtype, device=be.device)
    ts = torch.tensor([1], dtype=torch.int64, device=be.device)
    samples = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        emb = be.text_encoder(input_ids=ids)["last_hidden_state"]
        be.vae_encoder(pixels=pixels)
        ehs = emb[:1].expand(2, -1, -1).contiguous()
        be.unet(latents=lat, timestep=ts, encoder_hidden_states=ehs)
        be.unet(latents=lat, timestep=ts, encoder_hidden_states=ehs)
        if be.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            samples.append((time.perf_counter() - t0) * 1e3)
    return summarize(samples)


def build_reference(model):
    """The literal reference implementation on `model` (built once, timed as often as needed)."""
    from faseg_rt.method.reference import ReferenceFASeg
    from faseg_rt.model import load_modules, load_tokenizer

    return ReferenceFASeg(*load_modules(model), load_tokenizer(model))


def time_reference(model, image, classes, caption, iters: int, ref=None) -> dict:
    """Total and HARD+TTF ms of the reference over `iters` calls (ref: build_reference's, else built here)."""
    from faseg_rt.method.reference import reference_hard_ttf

    ref = ref or build_reference(model)
    totals, hards = [], []
    for _ in range(iters):
        t0 = time.perf_counter()
        cross, selfs, spans = ref.attention(image, classes, caption)
        t1 = time.perf_counter()
        reference_hard_ttf(cross, selfs, spans, 0.55, out_size=image.size)
        t2 = time.perf_counter()
        totals.append((t2 - t0) * 1e3)
        hards.append((t2 - t1) * 1e3)
    return {"total": summarize(totals), "hard_ttf": summarize(hards)}


def latency(args) -> dict:
    from faseg_rt.testing import synthetic_image

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
        if auto:  # random BLIP + SigLIP, built once, on this segmenter's device and dtype
            front = front or load_frontend(args.frontend, seg.device, seg.dtype, len(classes))
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
                                                              seg.dtype, sizes, max(1, args.iters))
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
