"""Front-end cost: BLIP captioning and SigLIP recognition next to the segmenter.

`faseg-rt bench latency --frontend real` times a whole "raw image in" call (caption="auto",
candidates="auto") so the caption and recognise stages appear in the per-stage table beside the
SD stages, and adds a batching table: per-image front-end time at several batch sizes, plus the
one-off cost of a vocabulary's class embeddings.

`faseg-rt bench precision --frontend` measures what the precision policy's captioner and
recognizer rows decide (frontend_agreement): the tiny models' captions and candidate lists in
bf16 and fp16 against fp32.

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


def load_frontend(kind: str, device, precision, n_classes: int) -> FrontEnd:
    """A FrontEnd with random BLIP + SigLIP models ("real" sizes or "tiny"), already loaded in
    the dtypes of the segmenter's precision policy (its captioner and recognizer rows)."""
    from faseg_rt.testing.tiny_frontend import make_blip, make_siglip

    real = kind == "real"
    with tempfile.TemporaryDirectory() as work:
        blip, blip_proc = make_blip(Path(work) / "blip", real=real)
        sig, sig_proc = make_siglip(Path(work) / "siglip", real=real)
    cap = Captioner(blip.to(device=device, dtype=precision["captioner"]), blip_proc,
                    name=f"random BLIP ({kind})")
    rec = Recognizer(sig.to(device=device, dtype=precision["recognizer"]), sig_proc, "siglip",
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


def time_frontend_batching(front: FrontEnd, image, classes, device, precision, batch_sizes,
                           iters: int) -> dict:
    """Per-image ms of captioning and recognition at each batch size (warm), and the cold cost
    of encoding the vocabulary's class embeddings (K classes x T templates, once per vocabulary)."""
    cap, rec = front.captioner(device, precision["captioner"]), front.recognizer(device, precision["recognizer"])
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


#: The recogniser families frontend_agreement measures (keys of build_tiny_frontend's dirs).
AGREEMENT_FAMILIES = ("siglip", "siglip2", "clip")
#: Its vocabulary: object words the tiny models' tokenizers were made from.
AGREEMENT_CLASSES = ("cat", "dog", "car", "bus", "sky", "grass", "tree", "water", "boat", "plane", "bird",
                     "horse", "sheep", "cow", "bottle", "sofa", "plant", "train", "person", "chair", "table")


def frontend_agreement(device, dtypes=("bfloat16", "float16"), n_images: int = 32) -> dict:
    """The tiny front-end models (faseg_rt/testing/tiny_frontend.py) cast to each of `dtypes`
    against themselves in float32, on `n_images` synthetic photos: the share of identical
    captions (BLIP, greedy), and per recogniser family the share of identical candidate lists
    (its default threshold and max_candidates) and the scores' max abs difference.  The casts
    bypass the device check, so fp16 runs on a CPU too (emulated: slow, but the tiny models are
    small)."""
    from faseg_rt.frontend.candidates import select
    from faseg_rt.testing import synthetic_image
    from faseg_rt.testing.tiny_frontend import build_tiny_frontend

    images = [synthetic_image(64, 48, seed=s) for s in range(n_images)]
    vocab = list(AGREEMENT_CLASSES)
    out = {"images": n_images, "classes": len(vocab), "dtypes": {}}
    with tempfile.TemporaryDirectory() as work:
        dirs = build_tiny_frontend(Path(work))

        def load(dtype):  # loaded in float32 each time (a cast back would keep the rounding), then cast
            models = {"blip": Captioner.from_pretrained(dirs["blip"], device=device, dtype=torch.float32),
                      **{f: Recognizer.from_pretrained(dirs[f], device=device, dtype=torch.float32)
                         for f in AGREEMENT_FAMILIES}}
            for m in models.values():
                m.model.to(dtype)
            return models

        def run(models):
            return {k: m(images) if k == "blip" else m.scores(images, vocab) for k, m in models.items()}

        want = run(load(torch.float32))
        for name in dtypes:
            models = load(getattr(torch, name))
            got = run(models)
            row = {"captions_equal": sum(a == b for a, b in zip(got["blip"], want["blip"])) / n_images}
            for f in AGREEMENT_FAMILIES:
                r, p, q = models[f], want[f], got[f]
                same = [tuple(select(a, r.threshold, r.max_candidates)) == tuple(select(b, r.threshold,
                        r.max_candidates)) for a, b in zip(p, q)]
                row[f] = {"candidates_equal": sum(same) / n_images, "max_score_diff": float(abs(p - q).max())}
            out["dtypes"][name] = row
    return out


def frontend_agreement_table(res: dict) -> str:
    """Markdown: the front-end agreement with fp32 per dtype."""
    names = list(res["dtypes"])
    lines = [f"\n**front end in reduced precision** (tiny random models, {res['images']} photos, "
             f"{res['classes']} classes; identical to fp32)\n",
             "| model | " + " | ".join(f"{n} vs float32" for n in names) + " |",
             "|---|" + "---|" * len(names),
             "| BLIP captions | " + " | ".join(f"{100 * res['dtypes'][n]['captions_equal']:.1f} %"
                                              for n in names) + " |"]
    for f in AGREEMENT_FAMILIES:
        cells = [f"{100 * res['dtypes'][n][f]['candidates_equal']:.1f} % (scores +-"
                 f"{res['dtypes'][n][f]['max_score_diff']:.4f})" for n in names]
        lines.append(f"| {f} candidate lists | " + " | ".join(cells) + " |")
    return "\n".join(lines)
