"""Front-end cost: BLIP captioning and SigLIP recognition next to the segmenter.

`faseg-rt bench latency --frontend real` times a whole "raw image in" call (caption="auto",
candidates="auto") so the caption and recognise stages appear in the per-stage table beside the
SD stages, and adds a batching table: per-image front-end time at several batch sizes, plus the
one-off cost of a vocabulary's class embeddings.

`real` builds random-weight models with the real architectures, in memory (no download, nothing
written): BLIP-large (ViT-L/16 at 384 px + BERT-base decoder, greedy to 20 tokens: random
weights never stop early, so this is the longest caption the default settings allow) and
transformers' default SigLIP (= siglip-base-patch16-224).  `tiny` uses the test models.
The recogniser keeps every class (threshold 0, max = K), so the segmenter's work is the same
with and without the front end and the difference is the front end alone.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from faseg_rt.frontend.captioner import Captioner
from faseg_rt.frontend.plan import FrontEnd
from faseg_rt.frontend.recognizer import Recognizer
from faseg_rt.bench.common import summarize

FRONT_STAGES = ["caption", "recognise"]


def load_frontend(kind: str, device, dtype, n_classes: int) -> FrontEnd:
    """A FrontEnd with random BLIP + SigLIP models ("real" sizes or "tiny"), already loaded."""
    from faseg_rt.testing.tiny_frontend import make_blip, make_siglip

    real = kind == "real"
    with tempfile.TemporaryDirectory() as work:
        blip, blip_proc = make_blip(Path(work) / "blip", real=real)
        sig, sig_proc = make_siglip(Path(work) / "siglip", real=real)
    cap = Captioner(blip.to(device=device, dtype=dtype), blip_proc, name=f"random BLIP ({kind})")
    rec = Recognizer(sig.to(device=device, dtype=dtype), sig_proc, "siglip",
                     name=f"random SigLIP ({kind})", threshold=0.0, max_candidates=n_classes)
    return FrontEnd(cap, rec)


def _ms(fn, device) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1e3


def time_frontend_batching(front: FrontEnd, image, classes, device, dtype, batch_sizes,
                           iters: int) -> dict:
    """Per-image ms of captioning and recognition at each batch size (warm), and the cold cost
    of encoding the vocabulary's class embeddings (K classes x T templates, once per vocabulary)."""
    cap, rec = front.captioner(device, dtype), front.recognizer(device, dtype)
    rec._cache.clear()
    out = {"text_embeddings_ms": _ms(lambda: rec.text_embeddings(classes), device),
           "templates": len(rec.templates), "batches": {}}
    for b in batch_sizes:
        images = [image] * b
        cap(images, batch_size=b)                    # warm-up at this shape
        rec(images, classes, batch_size=b)
        caps = [_ms(lambda: cap(images, batch_size=b), device) / b for _ in range(iters)]
        recs = [_ms(lambda: rec(images, classes, batch_size=b), device) / b for _ in range(iters)]
        out["batches"][str(b)] = {"caption": summarize(caps), "recognise": summarize(recs)}
    return out


def frontend_table(res: dict) -> str:
    """Markdown: front-end ms per image by batch size, and the share of a whole call."""
    fb = res.get("frontend_batching")
    if not fb:
        return ""
    lines = [f"\n**front end** ({res.get('frontend')} random weights, {res.get('device')}, "
             f"{res.get('dtype')}) - ms per image, median\n",
             "| batch | caption | recognise | front end |", "|---|---|---|---|"]
    for b, r in fb["batches"].items():
        c, g = r["caption"]["median"], r["recognise"]["median"]
        lines.append(f"| {b} | {c:.1f} | {g:.1f} | {c + g:.1f} |")
    lines.append(f"\nclass embeddings of the {len(res['classes'])}-class vocabulary x "
                 f"{fb['templates']} templates (once per vocabulary, then cached): "
                 f"{fb['text_embeddings_ms']:.1f} ms")
    for name, r in res.get("backends", {}).items():
        if "error" in r or "caption" not in r:
            continue
        front = r["caption"]["median"] + r["recognise"]["median"]
        lines.append(f"\n{name}: the front end is {front:.1f} ms of a {r['total']['median']:.1f} ms "
                     f"call at batch 1 ({100 * front / r['total']['median']:.0f} %)")
    return "\n".join(lines)
