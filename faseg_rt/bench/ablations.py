"""Ablations: each fast-path optimisation against the plain way on the same tensors, with the max
abs difference."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from faseg_rt.bench.common import load_segmenter, machine_info, resolve_model


def ablations(args) -> dict:
    """Each optimisation of the fast path against the plain way, on the same captured tensors
    of one image, in one run.  Every pair computes the same numbers (max abs diff reported)."""
    import torch.nn.functional as F

    from faseg_rt.images import preprocess
    from faseg_rt.method.hard import apply_affinity_coarse, apply_affinity_full, hard
    from faseg_rt.method.reference import dense_affinity
    from faseg_rt.testing import synthetic_image

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
        seg.clear_text_cache()
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
    notes = [f"- {r['optimisation']}: {r['note']}" for r in res["rows"] if r.get("note")]
    return "\n".join([*lines, "", *TERMS, *(["", "Plain ways:", *notes] if notes else [])])


#: One line per term of the ablations table, printed under it.
TERMS = (
    "- fast / plain: the runtime's way and the straightforward way of computing the same numbers "
    "on the same captured tensors of one image (max abs diff: how far apart they land).",
    "- K: the number of class maps (the vocabulary size) the step works on.",
    "- S_64 @ maps: the 64 x 64 self-attention of the UNet's highest-resolution layers applied to "
    "the K class maps, one of HARD's refinement steps; fast: fused attention from the captured "
    "queries and keys, never forming the 4096 x 4096 matrix.",
    "- A_32 @ maps: the 32 x 32 self-attention's affinity applied to 64 x 64 maps; fast: "
    "factorised as blocksum (each 2 x 2 block of a map summed down to 32 x 32), S_32 (the "
    "averaged 32 x 32 self-attention), then a bicubic resize back to 64 x 64.",
    "- HARD: hierarchical attention refinement, all resolutions' affinities applied to the maps.",
    "- text embeddings: the class prompts' CLIP text encoding, cached per class list.",
)


def _best_ms(fn, repeats: int) -> float:
    """Fastest of `repeats` runs (ms): the least noisy estimate on a shared machine."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best
