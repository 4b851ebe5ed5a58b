"""Vocabulary-size benchmark: time by stage and extra memory of one call for K classes.

For each K (default 1, 20, 150, 300, 1000) the vocabulary is the first K names of
`large_vocabulary()` (ADE20K-847, then the PASCAL Context-459 and COCO-Stuff-171 names it lacks),
so prompts have realistic token lengths. Per K, on one image at the configured size:

- text encoding cold (tokenize + encode every class-prompt chunk) and warm (the per-vocabulary
  cache), in ms;
- one call's time by stage (`faseg_rt.profiling`), with labels only (the CLI's default);
- the peak of tensor memory allocated during that call (`PeakTensorMemory`: storages created
  inside the call and alive at once; the model's weights and inputs are not counted);
- the same memory per class above K = 1, to read growth against K;
- the call's process CPU time beside its wall time: on a shared machine other processes stretch
  the wall clock, much less the CPU seconds this process spends;
- for K <= --scores-max, the same call with `return_scores=True` (today's way before the
  streamed labels: every class's 512 x 512 map held at once), so the saving is read in one run.

One run measures every K, so ratios compare like with like on a shared machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from faseg_rt.bench.common import PeakTensorMemory, load_segmenter, machine_info, resolve_model
from faseg_rt.profiling import record

DEFAULT_KS = (1, 20, 150, 300, 1000)


def large_vocabulary() -> tuple[str, ...]:
    """Distinct class names of the open-vocabulary benchmarks, ADE20K-847 first (1400+)."""
    from faseg_rt.eval.datasets.ade20k_full import CLASSES as ADE847
    from faseg_rt.eval.datasets.coco_stuff import CLASSES as COCO171
    from faseg_rt.eval.datasets.context459 import CLASSES as PC459

    seen: dict[str, str] = {}
    for name in ADE847 + PC459 + COCO171:
        seen.setdefault(name.lower(), name)
    return tuple(seen.values())


def _stage_ms(times) -> dict[str, float]:
    return {k: round(v, 1) for k, v in times.ms.items()}


def _peak_mb(seg, image, classes, return_scores: bool) -> tuple[float, float, float, dict]:
    """(wall s, CPU s, peak extra MB, stage ms) of one call."""
    with record() as times, PeakTensorMemory() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        seg(image, classes=classes, return_scores=return_scores)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, mem.peak / 2**20, _stage_ms(times)


def measure_k(seg, image, classes: list[str], repeats: int = 1, scores_max: int = 0) -> dict:
    """Text encoding cold / warm, stage times and peak extra tensor memory for one K."""
    seg.clear_text_cache()
    t0 = time.perf_counter()
    text = seg.encode_text(classes)
    cold = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    seg.encode_text(classes)
    warm = (time.perf_counter() - t0) * 1e3
    best = None
    for _ in range(repeats):
        wall, cpu, peak, stages = _peak_mb(seg, image, classes, return_scores=False)
        if best is None or wall * 1e3 < best["total_ms"]:
            best = {"total_ms": round(wall * 1e3, 1), "cpu_s": round(cpu, 2), "stages_ms": stages,
                    "peak_extra_mb": round(peak, 1)}
    if len(classes) <= scores_max:
        best["with_scores_peak_extra_mb"] = round(_peak_mb(seg, image, classes, True)[2], 1)
    return {"classes": len(classes), "chunks": len(text.prompts.chunks),
            "text_cold_ms": round(cold, 1), "text_warm_ms": round(warm, 2), **best}


def vocab(args) -> dict:
    """Run the benchmark for args.ks on args.model; returns the JSON-ready result."""
    from faseg_rt.testing import synthetic_image

    model = resolve_model(args.model, Path(args.cache))
    seg = load_segmenter(args, model)
    size = seg.config.image_size
    image = synthetic_image(size, size, seed=0)
    names = large_vocabulary()
    ks = [int(k) for k in str(args.ks).split(",")] if args.ks else list(DEFAULT_KS)
    if max(ks) > len(names):
        raise SystemExit(f"--ks: at most {len(names)} classes are available")
    seg(image, classes=names[:1], return_scores=False)  # warm-up: first-call costs are not a vocabulary effect
    rows = []
    for k in ks:
        rows.append(measure_k(seg, image, list(names[:k]), repeats=args.repeats,
                              scores_max=args.scores_max))
        print(f"[bench] K={k}: {rows[-1]['total_ms'] / 1e3:.1f} s, peak extra "
              f"{rows[-1]['peak_extra_mb']:.0f} MB", file=sys.stderr, flush=True)
    base = rows[0]
    for r in rows:
        extra_k = r["classes"] - base["classes"]
        r["mb_per_class_over_first"] = (round((r["peak_extra_mb"] - base["peak_extra_mb"]) / extra_k, 3)
                                        if extra_k else None)
    return {"benchmark": "vocab", "model": str(args.model), "device": str(seg.device),
            "dtype": str(seg.dtype).removeprefix("torch."), "image_size": size,
            "machine": machine_info(seg.device), "load_average": _load(), "rows": rows}


def _load() -> list[float] | None:
    """1, 5 and 15 minute load averages (how shared the machine was), where the OS says."""
    try:
        import os

        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def vocab_table(res: dict) -> str:
    """Markdown: one row per K with total, the big stages and the peak extra memory."""
    cols = ["vae_encoder", "unet_inversion", "unet_reconstruction", "hard", "ttf", "labels"]
    lines = [f"Vocabulary size on {res['model']} ({res['device']}, {res['dtype']}, "
             f"{res['image_size']} px, labels only)", "",
             "| K | chunks | text cold ms | text warm ms | wall s | CPU s | " +
             " | ".join(f"{c} ms" for c in cols) +
             " | peak extra MB | MB/class over K=first | same with scores MB |",
             "|---:" * (9 + len(cols)) + "|"]
    for r in res["rows"]:
        st = r["stages_ms"]
        per = "" if r["mb_per_class_over_first"] is None else f"{r['mb_per_class_over_first']:.2f}"
        sc = r.get("with_scores_peak_extra_mb")
        lines.append(f"| {r['classes']} | {r['chunks']} | {r['text_cold_ms']:.0f} | "
                     f"{r['text_warm_ms']:.2f} | {r['total_ms'] / 1e3:.2f} | {r['cpu_s']:.1f} | " +
                     " | ".join(f"{st.get(c, 0.0):.0f}" for c in cols) +
                     f" | {r['peak_extra_mb']:.0f} | {per} | {'' if sc is None else f'{sc:.0f}'} |")
    if res.get("load_average"):
        lines.append(f"\nLoad average during the run (1/5/15 min): {res['load_average']}")
    return "\n".join(lines)
