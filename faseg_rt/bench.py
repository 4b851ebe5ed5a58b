"""Benchmarks: latency per stage and throughput, always side by side with the reference path
and the network-only floor, measured in ONE run (ratios are what we compare; this machine is
shared and noisy).  Scripts in benchmarks/ and `faseg-rt bench` call into this module.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .io import atomic_write_json
from .profiling import record

STAGES = ["text_encoder", "vae_encoder", "unet_inversion", "unet_reconstruction", "hard", "ttf",
          "postprocess"]


# ----------------------------------------------------------------------------- helpers
def resolve_model(spec: str, cache: Path) -> Path:
    """'tiny' / 'full' build a random SD 1.5-shaped model under cache; anything else is a path/id."""
    from .testing import build_tiny_model

    if spec in ("tiny", "full"):
        return build_tiny_model(cache / f"{spec}-sd15-random", full=spec == "full")
    return Path(spec) if Path(spec).exists() else spec


def load_segmenter(args, model, backend: str = "torch"):
    """The Segmenter a benchmark measures: --device, --dtype (a name) and --engines as given."""
    from .segmenter import Segmenter

    return Segmenter.from_pretrained(model, backend=backend, device=args.device, dtype=args.dtype,
                                     engines=args.engines)


def summarize(samples: list[float]) -> dict:
    s = sorted(samples)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return {"median": statistics.median(s), "p90": p90, "n": len(s)}


def machine_info(device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of live tensor storages created inside the block (CPU or GPU), by watching
    every op's outputs and their release; the inputs that existed before are not counted."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.refs: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, ptr):
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            self.current -= self.live.pop(ptr)
            del self.refs[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                try:
                    st = t.untyped_storage()
                except (RuntimeError, NotImplementedError):
                    continue
                ptr = st.data_ptr()
                if ptr not in self.live:
                    self.live[ptr] = st.nbytes()
                    self.refs[ptr] = 0
                    self.current += st.nbytes()
                    self.peak = max(self.peak, self.current)
                self.refs[ptr] += 1
                weakref.finalize(t, self._release, ptr)
        return out


def hard_memory_mb(seg, classes_count: int, summaries: dict) -> float:
    """Extra memory (MB) of cross fusion + HARD + TTF for K classes on given summaries."""
    classes = [f"class {i}" for i in range(classes_count)]
    text = seg.encode_text(classes)
    n = summaries["q_64"].shape[0]
    if summaries["cross_8"].shape[1] < text.chunks.shape[0]:
        # more class prompts than captured: repeat the captured chunk (shapes matter, not values)
        j = text.chunks.shape[0]
        summaries = dict(summaries)
        for r in (8, 16, 32, 64):
            summaries[f"cross_{r}"] = summaries[f"cross_{r}"][:, :1].expand(n, j, -1, -1).contiguous()
    if torch.device(seg.device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        seg.refine(summaries, text.prompts)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with torch.inference_mode(), PeakTensorMemory() as m:
        out = seg.refine(summaries, text.prompts)
        del out
    return m.peak / 2**20


def reference_hard_memory_mb(summaries: dict, classes_count: int) -> float:
    """The same measure for the literal reference's HARD + TTF (dense 4096 x 4096 matrices)."""
    from .reference import reference_hard_ttf

    s = {k: v[:2].float().cpu() for k, v in summaries.items()}
    selfs = {r: s[f"self_{r}"] for r in (8, 16, 32)}
    cross = {r: s[f"cross_{r}"][:, :1] for r in (8, 16, 32, 64)}
    spans = [[(1 + i, 2 + i) for i in range(min(classes_count, 75))]]
    with torch.inference_mode():
        selfs[64] = torch.softmax(s["q_64"] @ s["k_64"].transpose(-1, -2), -1).mean(1)
        with PeakTensorMemory() as m:
            reference_hard_ttf(cross, selfs, spans, 0.55)
    return m.peak / 2**20


# ----------------------------------------------------------------------------- latency
def time_segmenter(seg, image, classes, caption, warmup: int, iters: int) -> dict:
    """Per-stage and total ms over `iters` calls (text cache cleared: text encoder included)."""
    per_stage = {k: [] for k in STAGES}
    totals = []
    for i in range(warmup + iters):
        seg._text_cache.clear()
        with record() as t:
            t0 = time.perf_counter()
            seg(image, classes=classes, caption=caption)
            if torch.device(seg.device).type == "cuda":
                torch.cuda.synchronize()
            total = (time.perf_counter() - t0) * 1e3
        if i < warmup:
            continue
        totals.append(total)
        ms = dict(t.ms)
        ms["postprocess"] = ms.pop("labels", 0.0) + ms.pop("resize", 0.0) + ms.pop("load_image", 0.0)
        for k in STAGES:
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


def time_reference(model, image, classes, caption, iters: int) -> dict:
    from .model import load_modules, load_tokenizer
    from .reference import ReferenceFASeg, reference_hard_ttf

    ref = ReferenceFASeg(*load_modules(model), load_tokenizer(model))
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
    from .testing import synthetic_image

    cache = Path(args.cache)
    model = resolve_model(args.model, cache)
    image = synthetic_image(640, 480, seed=7)
    classes = [c.strip() for c in args.classes.split(",")]
    caption = args.caption or None
    results = {"kind": "latency", "model": str(args.model), "classes": classes, "batch": 1,
               "image": "640x480 synthetic", "backends": {}}
    seg = None
    for backend in args.backends.split(","):
        try:
            seg = load_segmenter(args, model, backend)
        except Exception as e:  # report, keep measuring the others
            results["backends"][backend] = {"error": f"{type(e).__name__}: {e}"}
            print(f"[bench] {backend}: not available: {e}", file=sys.stderr)
            continue
        print(f"[bench] {backend}: timing {args.iters} iterations ...", file=sys.stderr)
        r = time_segmenter(seg, image, classes, caption, args.warmup, args.iters)
        r["floor"] = time_network_floor(seg, args.warmup, args.iters)
        results["backends"][backend] = r
        results["device"] = str(seg.device)
        results["dtype"] = str(seg.dtype).removeprefix("torch.")
        results["machine"] = machine_info(seg.device)
        print(latency_table(results), file=sys.stderr)  # partial results survive a killed run
    if args.reference:
        print("[bench] reference: timing ...", file=sys.stderr)
        results["reference"] = time_reference(model, image, classes, caption, max(1, args.ref_iters))
    if seg is not None and args.memory:
        from .images import preprocess

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
        lines.append(f"\n**{name}** ({res.get('device')}, {res.get('dtype')}, batch 1, "
                     f"{len(res['classes'])} classes) - ms, median (p90)\n")
        lines.append("| stage | ms | share |")
        lines.append("|---|---|---|")
        tot = r["total"]["median"]
        for k in STAGES:
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
    if "hard_memory_mb" in res:
        mem = ", ".join(f"{k}: {v:.1f} MB" for k, v in res["hard_memory_mb"].items())
        ref_mem = res.get("reference_hard_memory_mb")
        tail = f"; reference HARD+TTF at K=20: {ref_mem['K=20']:.1f} MB" if ref_mem else ""
        lines.append(f"\nHARD+TTF extra memory (peak live tensors): {mem}{tail}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- throughput
def throughput(args) -> dict:
    """Images/s over batch sizes, each batch size in a fresh process (honest peak memory)."""
    import subprocess

    results = {"kind": "throughput", "model": args.model, "batches": {}}
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        cmd = [sys.executable, "-m", "faseg_rt.bench", "_throughput_one", "--model", args.model,
               "--batch", str(b), "--images", str(max(b, args.images)), "--backend", args.backend,
               "--cache", args.cache] + (["--device", args.device] if args.device else []) + \
              (["--dtype", args.dtype] if args.dtype else []) + (["--engines", args.engines] if args.engines else [])
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

    from .testing import synthetic_image

    model = resolve_model(args.model, Path(args.cache))
    seg = load_segmenter(args, model, args.backend)
    images = [synthetic_image(320, 240, seed=i) for i in range(args.images)]
    classes = ["sky", "ball", "box", "person", "tree"]
    seg.segment_batch(images[:args.batch], classes, batch_size=args.batch)       # warm-up
    if seg.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    seg.segment_batch(images, classes, batch_size=args.batch)
    if seg.device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    out = {"images": len(images), "seconds": dt, "images_per_s": len(images) / dt,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if seg.device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    # HARD + TTF's own extra memory for this batch at K = 20 (grows as batch x N x K)
    from .images import preprocess

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
    return "\n".join(lines)


# ----------------------------------------------------------------------------- ablations
def _best_ms(fn, repeats: int) -> float:
    """Fastest of `repeats` runs (ms): the least noisy estimate on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def ablations(args) -> dict:
    """Each optimisation of the fast path against the plain way, on the same captured tensors
    of one image, in one run.  Every pair computes the same numbers (max abs diff reported)."""
    import torch.nn.functional as F

    from .hard import apply_affinity_coarse, apply_affinity_full, hard
    from .images import preprocess
    from .reference import dense_affinity
    from .testing import synthetic_image

    model = resolve_model(args.model, Path(args.cache))
    seg = load_segmenter(args, model)
    cfg = seg.config
    classes = [f"class {i}" for i in range(args.classes)]
    text = seg.encode_text(classes)
    with torch.inference_mode():
        summ = seg.attention_summaries(preprocess([synthetic_image(320, 240, seed=1)], 512), [text])
    q, k = summ["q_64"].float(), summ["k_64"].float()                  # (2, H, 4096, d)
    n, heads, p, d = q.shape
    x = torch.rand(n, args.classes, 64, 64, generator=torch.Generator().manual_seed(0))
    rows = []

    def pair(name, fast, slow, note=""):
        with torch.inference_mode():
            a, b = fast(), slow()
            diff = (a.float() - b.float()).abs().max().item()
            tf, ts = _best_ms(fast, args.repeats), _best_ms(slow, args.repeats)
        rows.append({"optimisation": name, "fast_ms": tf, "plain_ms": ts, "speedup": ts / tf,
                     "max_abs_diff": diff, "note": note})
        print(f"[bench] {name}: {tf:.1f} ms vs {ts:.1f} ms", file=sys.stderr)

    def s64_unpadded():
        v = x.reshape(n, 1, args.classes, p).transpose(2, 3).expand(n, heads, p, args.classes)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        return out.mean(1).transpose(1, 2).reshape(x.shape)

    def s64_per_head_dense():
        out = 0
        for h in range(heads):
            probs = torch.softmax(q[:, h] @ k[:, h].transpose(1, 2), dim=-1)   # (n, 4096, 4096)
            out = out + probs @ x.reshape(n, args.classes, p).transpose(1, 2)
        return (out / heads).transpose(1, 2).reshape(x.shape)

    pair("S_64 @ maps: flash SDPA, q/k/v zero-padded to one width", lambda: apply_affinity_full(q, k, x),
         s64_unpadded, "plain = SDPA with value width K != head width (no fused kernel on CPU)")
    pair("S_64 @ maps: fused attention vs dense per-head softmax", lambda: apply_affinity_full(q, k, x),
         s64_per_head_dense, "plain builds each head's 4096 x 4096 probabilities")
    s32 = summ["self_32"].float()
    dense = torch.stack([dense_affinity(s32[i]) for i in range(n)])       # (n, 4096, 4096)
    pair("A_32 @ maps: factorised (blocksum, S_32, bicubic)", lambda: apply_affinity_coarse(s32, x),
         lambda: (dense @ x.reshape(n, args.classes, p).transpose(1, 2)).transpose(1, 2).reshape(x.shape),
         "plain multiplies by the dense 4096 x 4096 A_32 (its construction not even counted)")
    selfs = {r: summ[f"self_{r}"].float() for r in (8, 16, 32)}

    def per_class():
        return torch.cat([hard(x[:, i:i + 1], selfs, q, k, cfg.self_weights, cfg.tau)
                          for i in range(args.classes)], dim=1)

    pair(f"HARD on K={args.classes} classes: all classes in one call vs a loop over classes",
         lambda: hard(x, selfs, q, k, cfg.self_weights, cfg.tau), per_class)

    def text_miss():
        seg._text_cache.clear()
        return seg.encode_text(classes).full

    pair("text embeddings: cache hit vs encoder call", lambda: seg.encode_text(classes).full, text_miss)
    return {"kind": "ablations", "model": str(args.model), "classes": args.classes,
            "device": str(seg.device), "machine": machine_info(seg.device), "rows": rows}


def ablations_table(res: dict) -> str:
    lines = [f"Ablations ({res['model']}, {res['device']}, K={res['classes']}; best of repeats, ms)\n",
             "| optimisation | fast ms | plain ms | speed-up | max abs diff |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['optimisation']} | {r['fast_ms']:.1f} | {r['plain_ms']:.1f} | "
                     f"{r['speedup']:.1f}x | {r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- operator profile
def profile(args) -> dict:
    """torch.profiler over one warm fast-path call at batch 1: where the time goes, by operator.

    This is the evidence for the "gap" paragraph of benchmarks/README.md: on CPU the fast path is
    bound by the fused attention kernel (the UNet's own full-resolution self-attention, plus
    HARD's r = 64 term, which re-runs that attention tau times with the class maps as values).
    """
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from .testing import synthetic_image

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


# ----------------------------------------------------------------------------- CLI
def add_common(p):
    p.add_argument("--model", default="tiny", help="'tiny', 'full' (random SD 1.5 widths) or a model dir/id")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, choices=["fp32", "fp16"])
    p.add_argument("--engines", default=None)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "faseg_rt_bench_models"))
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--tag", default=None, help="suffix of the result file name")


def build_parser():
    p = argparse.ArgumentParser(prog="faseg-rt bench")
    sub = p.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency", help="per-stage latency at batch 1 vs reference and floor")
    add_common(lat)
    lat.add_argument("--backends", default="torch")
    lat.add_argument("--classes", default="sky,ball,box,person,tree")
    lat.add_argument("--caption", default="coloured shapes on a plain background")
    lat.add_argument("--warmup", type=int, default=1)
    lat.add_argument("--iters", type=int, default=5)
    lat.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True)
    lat.add_argument("--ref-iters", type=int, default=1)
    lat.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    thr = sub.add_parser("throughput", help="images/s and peak memory over batch sizes")
    add_common(thr)
    thr.add_argument("--backend", default="torch")
    thr.add_argument("--batch-sizes", default="1,2,4")
    thr.add_argument("--images", type=int, default=8)
    abl = sub.add_parser("ablations", help="each optimisation against the plain way, same tensors")
    add_common(abl)
    abl.add_argument("--classes", type=int, default=5)
    abl.add_argument("--repeats", type=int, default=3)
    prof = sub.add_parser("profile", help="torch.profiler: top operators of one warm call")
    add_common(prof)
    prof.add_argument("--classes", default="sky,ball,box,person,tree")
    prof.add_argument("--top", type=int, default=15)
    one = sub.add_parser("_throughput_one")
    add_common(one)
    one.add_argument("--backend", default="torch")
    one.add_argument("--batch", type=int, required=True)
    one.add_argument("--images", type=int, required=True)
    return p


def run(args) -> int:
    if args.what == "_throughput_one":
        _throughput_one(args)
        return 0
    run_fn, table_fn = {"latency": (latency, latency_table), "throughput": (throughput, throughput_table),
                        "ablations": (ablations, ablations_table),
                        "profile": (profile, profile_table)}[args.what]
    res = run_fn(args)
    table = table_fn(res)
    res["markdown"] = table
    res["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tag = args.tag or f"{args.model if args.model in ('tiny', 'full') else 'model'}-{res.get('device', args.device or 'auto')}"
    path = Path(args.out) / f"{args.what}-{tag}.json".replace(":", "")
    atomic_write_json(path, res)
    print(table)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """`faseg-rt bench latency|throughput|ablations|profile ...`"""
    p = subparsers.add_parser("bench", help="latency / throughput benchmarks (see benchmarks/README.md)",
                              add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: run(build_parser().parse_args(a.rest)))


def main(argv=None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
