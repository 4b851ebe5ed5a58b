"""Precision policy, measured: each stage's error against the float64 oracle, and mask agreement.

Every stage of a segmenter runs on the oracle's own input of that stage (cast to the stage's
dtype), so a row is that stage's error alone, not the sum of everything upstream:

    text_encoder  full-prompt embeddings E                  (oracle: E)
    vae_encoder   moments from the oracle's pixels           (oracle: moments)
    unet          eps of the inversion pass from z0, E       (oracle: eps)
    inversion     z1 from the oracle's z0 and eps            (oracle: z1)
    capture       cross_r / self_r / S_64 from the oracle's z1, E, E_cls (oracle: dense means)
    refine        HARD + TTF scores from the segmenter's own summaries (oracle: the literal
                  HARD + TTF in float64 on the same summaries)
    end_to_end    scores of a whole call                     (oracle: scores)

Errors are relative: max |x - x_oracle| / max |x_oracle|; end_to_end is the scores' max abs
difference.  `faseg-rt bench precision` prints them for fp32 and bf16 side by side, with the
labels' agreement (bf16 vs fp32, each vs the oracle) and the time of each call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from faseg_rt.method.inversion import invert
from faseg_rt.method.reference import reference_hard_ttf


def relative_error(x: torch.Tensor, oracle: torch.Tensor) -> float:
    x, oracle = x.detach().double().cpu(), oracle.detach().double().cpu()
    return float((x - oracle).abs().max() / oracle.abs().max().clamp_min(1e-30))


def oracle_run(ref, image, classes, caption=None, scores: bool = True) -> dict:
    """The oracle's intermediates, dense attention means and (with `scores`: HARD + TTF, the
    costly dense part) scores and labels for one image."""
    trace: dict = {}
    cross, selfs, spans = ref.attention(image, classes, caption, trace=trace)
    if scores:
        trace["scores"], trace["labels"] = reference_hard_ttf(cross, selfs, spans, 0.55, out_size=image.size,
                                                              side=ref.side)
    return dict(trace, cross=cross, selfs=selfs)


def network_stage_errors(seg, oracle: dict, prompts=None) -> dict[str, float]:
    """text_encoder / vae_encoder / unet / inversion / capture errors of `seg` (see module doc),
    and refine's with the call's `prompts` (DualPrompts) given.  Each stage in its policy dtype."""
    be, prec, full_res = seg.backend, seg.precision, seg.config.latent_size
    out = {}
    with torch.inference_mode():
        E, e_cls = oracle["E"], torch.cat(oracle["E_cls"])                 # (1, 77, D), (J, 77, D)
        e = be.text_encoder(input_ids=oracle["E_ids"])["last_hidden_state"]
        out["text_encoder"] = relative_error(e, E)
        moments = be.vae_encoder(pixels=oracle["pixels"].to(prec["vae_encoder"]))["moments"]
        out["vae_encoder"] = relative_error(moments, oracle["moments"])
        full = E.expand(2, -1, -1).to(prec["text_encoder"])
        ts = torch.tensor([seg.config.timestep])
        eps = be.unet(latents=oracle["z0"].to(prec["unet"]), timestep=ts, encoder_hidden_states=full)["eps"]
        out["unet"] = relative_error(eps, oracle["eps"])
        z1 = invert(oracle["z0"].to(prec["inversion"]), oracle["eps"].to(prec["inversion"]), seg.config)
        out["inversion"] = relative_error(z1, oracle["z1"])
        chunks = e_cls.unsqueeze(0).expand(2, -1, -1, -1).to(prec["text_encoder"])
        s = be.unet_attn(latents=oracle["z1"].to(prec["unet"]), timestep=ts, encoder_hidden_states=full,
                         class_hidden_states=chunks)
    out["capture_cross"] = max(relative_error(s[f"cross_{r}"], c) for r, c in oracle["cross"].items()
                               if seg.config.cross_weights.get(r, 0))
    q, k = s[f"q_{full_res}"].double(), s[f"k_{full_res}"].double()
    dense = {r: s[f"self_{r}"].double() for r in seg.config.resolutions if r != full_res}
    dense[full_res] = torch.softmax(q @ k.transpose(-1, -2), -1).mean(1)
    out["capture_self"] = max(relative_error(v, oracle["selfs"][r]) for r, v in dense.items())
    if prompts is not None:
        cross = {r: s[f"cross_{r}"].double() for r in seg.config.resolutions}
        spans = [list(ch.spans) for ch in prompts.chunks]
        want, _ = reference_hard_ttf(cross, dense, spans, 0.55, side=full_res)
        out["refine"] = relative_error(seg.refine(s, prompts)[0], torch.from_numpy(want))
    return out


def call_errors(seg, oracle: dict, image, classes, caption=None):
    """(relative error of the scores, label agreement with the oracle, the result) of one call."""
    res = seg(image, classes=classes, caption=caption)
    err = float(np.abs(res.scores - oracle["scores"]).max() / np.abs(oracle["scores"]).max())
    return err, float((res.labels == oracle["labels"]).mean()), res


def label_margin(scores: np.ndarray, threshold: float = 0.55) -> np.ndarray:
    """(512, 512) distance of each pixel's label from changing: min(top1 - top2, |top1 - threshold|)."""
    s = np.sort(scores, 0)
    second = s[-2] if len(s) > 1 else np.zeros_like(s[-1])
    return np.minimum(s[-1] - second, np.abs(s[-1] - threshold))


def compare_masks(a, b, threshold: float = 0.55) -> dict:
    """Label agreement of two results, and the share of changed pixels that sat within the
    scores' max difference of a tie or of the threshold in `a` (a flip of a near-tie)."""
    flips = a.labels != b.labels
    err = float(np.abs(a.scores - b.scores).max())
    la = np.where(a.scores.max(0) < threshold, 0, a.scores.argmax(0) + 1)
    lb = np.where(b.scores.max(0) < threshold, 0, b.scores.argmax(0) + 1)
    changed = la != lb
    near = float((label_margin(a.scores, threshold)[changed] <= err).mean()) if changed.any() else 1.0
    return {"agreement": float((~flips).mean()), "score_max_diff": err, "flips_near_tie": near}


def precision(args) -> dict:
    """`faseg-rt bench precision`: fp32 and --dtype (default bf16) on the parity photographs;
    with --oracle (tiny widths) also each stage's error against the float64 oracle."""
    import time

    from faseg_rt.bench.common import load_segmenter, resolve_model
    from faseg_rt.method.reference import ReferenceFASeg
    from faseg_rt.model import load_modules, load_tokenizer
    from faseg_rt.profiling import record
    from faseg_rt.testing import PARITY_CASES, synthetic_image

    model = resolve_model(args.model, Path(args.cache))
    dtypes = ["fp32", args.dtype or "bf16"]
    segs = {d: load_segmenter(args, model, "torch", d) for d in dtypes}
    ref = ReferenceFASeg(*[m.double() for m in load_modules(model)], load_tokenizer(model)) if args.oracle else None
    res = {"kind": "precision", "model": str(args.model), "dtypes": dtypes, "cases": [],
           "policy": {d: s.backend.precision.names() for d, s in segs.items()}}
    for seed, w, h, classes, caption in PARITY_CASES[:args.cases]:
        img = synthetic_image(w, h, seed=seed)
        oracle = oracle_run(ref, img, classes, caption) if ref is not None else None
        case = {"image": seed, "runs": {}}
        out = {}
        for d, seg in segs.items():
            run = network_stage_errors(seg, oracle) if oracle is not None else {}
            with record() as t:
                t0 = time.perf_counter()
                out[d] = seg(img, classes=classes, caption=caption)
                run["seconds"] = time.perf_counter() - t0
            run["stage_seconds"] = {k: v / 1e3 for k, v in t.ms.items()}
            if oracle is not None:
                run["end_to_end"] = float(np.abs(out[d].scores - oracle["scores"]).max())
                run["labels_vs_oracle"] = float((out[d].labels == oracle["labels"]).mean())
            case["runs"][d] = run
        case["masks"] = compare_masks(out[dtypes[0]], out[dtypes[1]])
        res["cases"].append(case)
    if getattr(args, "frontend", False):
        from faseg_rt.bench.frontend import frontend_agreement

        res["frontend"] = frontend_agreement(next(iter(segs.values())).device)
    return res


def precision_table(res: dict) -> str:
    d32, d = res["dtypes"]
    lines = [f"\n**{d} vs fp32** ({res['model']}): policy {res['policy'][d]}\n"]
    stages = [k for k in res["cases"][0]["runs"][d32] if k not in ("seconds", "stage_seconds")]
    if stages:
        lines += [f"| stage (error vs float64) | {d32} | {d} |", "|---|---|---|"]
        for k in stages:
            v = [max(c["runs"][x][k] for c in res["cases"]) if k != "labels_vs_oracle" else
                 min(c["runs"][x][k] for c in res["cases"]) for x in (d32, d)]
            lines.append(f"| {k} | {v[0]:.2g} | {v[1]:.2g} |")
    lines += ["", f"| image | {d} vs fp32 labels | changed pixels near a tie | {d32} s | {d} s | speed-up |",
              "|---|---|---|---|---|---|"]
    for c in res["cases"]:
        m, t32, t = c["masks"], c["runs"][d32]["seconds"], c["runs"][d]["seconds"]
        lines.append(f"| {c['image']} | {100 * m['agreement']:.2f} % | {100 * m['flips_near_tie']:.0f} % | "
                     f"{t32:.1f} | {t:.1f} | {t32 / t:.2f}x |")
    if "frontend" in res:
        from faseg_rt.bench.frontend import frontend_agreement_table

        lines.append(frontend_agreement_table(res["frontend"]))
    return "\n".join(lines)
