"""The timers of the latency benchmarks: one call of ours by stage, the network-only floor,
and the literal reference, each over warm-up and timed iterations on the same image.  Shared by
the per-stage table (latency.py) and the idle / loaded table (loaded.py)."""

from __future__ import annotations

import time

import torch

from faseg_rt.bench.common import STAGES, summarize
from faseg_rt.bench.frontend import FRONT_STAGES
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
