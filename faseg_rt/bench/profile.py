"""Operator profile: torch.profiler's top operators of one warm call (where the time goes)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from faseg_rt.bench.common import load_segmenter, machine_info, resolve_model


def profile(args) -> dict:
    """torch.profiler over one warm fast-path call at batch 1: where the time goes, by operator.

    This is the evidence for the "gap" paragraph of benchmarks/README.md: on CPU the fast path is
    bound by the fused attention kernel (the UNet's own full-resolution self-attention, plus
    HARD's r = 64 term, which re-runs that attention tau times with the class maps as values).
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from faseg_rt.testing import synthetic_image

    model = resolve_model(args.model, Path(args.cache))
    seg = load_segmenter(args, model)
    image = synthetic_image(640, 480, seed=0)
    classes = [c.strip() for c in args.classes.split(",")]
    seg(image, classes=classes)                                          # warm-up, fills caches
    cuda = seg.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode(), torch_profile(activities=acts) as prof:
        t0 = time.perf_counter()
        seg(image, classes=classes)
        if cuda:
            torch.cuda.synchronize()
        total = (time.perf_counter() - t0) * 1e3
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr), reverse=True)
    rows = [{"op": e.key, "calls": e.count, "self_ms": getattr(e, attr) / 1e3,
             "share": getattr(e, attr) / 1e3 / total} for e in events[: args.top]]
    return {"kind": "profile", "model": str(args.model), "device": str(seg.device),
            "dtype": str(seg.dtype).removeprefix("torch."), "classes": classes,
            "machine": machine_info(seg.device), "total_ms": total, "rows": rows}


def profile_table(res: dict) -> str:
    lines = [f"Operator profile ({res['model']}, {res['device']}, {res['dtype']}, batch 1, "
             f"{len(res['classes'])} classes): one call of {res['total_ms']:.0f} ms, top operators by self time\n",
             "| operator | calls | self ms | share of the call |", "|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| `{r['op']}` | {r['calls']} | {r['self_ms']:.1f} | {100 * r['share']:.1f} % |")
    return "\n".join(lines)
