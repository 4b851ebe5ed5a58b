"""Accuracy on a trained model: FA-Seg's mIoU on the toy world's validation split, for the method,
its ablations, the untrained model of the same layout, and every precision / backend / batch
variant, with label agreement against fp32 batch 1 (docs/eval.md, "Accuracy on a trained model").

    python benchmarks/accuracy.py --n 300                      # the shipped toy model
    python benchmarks/accuracy.py --model DIR --n 300 --variants fp32,bf16,batch-8

Ablations are computed from the same network pass as the full method (spec steps 5-7 with one
part changed), except "class prompt only", which needs its own pass (no caption in the prompt).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from faseg_rt.eval.datasets.toy_world import NAMES, ToyWorld
from faseg_rt.eval.metrics import ConfusionMatrix

VAL_SEED = 1000
#: the paper's ablations, each alone (computed in method_table)
ABLATIONS = ("full", "no HARD (cross-attention only)", "no TTF", "class prompt only (no dual prompts)",
             "HARD with self-attention at the finest grid only")


def _world_samples(n: int, size: int):
    world = ToyWorld(size=size)
    return [world.sample(VAL_SEED, i) for i in range(n)]


def _ids(sample) -> np.ndarray:
    return np.asarray([NAMES.index(c) + 1 for c in sample.classes])


def _labels(scores: torch.Tensor, ids: np.ndarray, threshold: float) -> np.ndarray:
    best, arg = scores.max(0)
    return np.where(best.numpy() >= threshold, ids[arg.numpy()], 0)


def method_table(seg, samples, log=print) -> tuple[dict, dict]:
    """mIoU of the full method and each ablation ({name: metrics}), and the ablations of each
    resolution's fusion weight set to 0 in turn; plus the full method's labels per picture (the
    reference the variants are compared with)."""
    from faseg_rt.images import preprocess
    from faseg_rt.method.hard import class_maps_fused, hard, minmax_normalize
    from faseg_rt.method.ttf import ttf

    cfg = seg.config
    names = list(ABLATIONS) + [f"cross weight {r} = 0" for r in cfg.resolutions if cfg.cross_weights[r]] \
        + [f"self weight {r} = 0" for r in cfg.resolutions if cfg.self_weights[r]]
    cms = {n: ConfusionMatrix(len(NAMES) + 1) for n in names}
    labels = []
    s = cfg.latent_size
    for i, smp in enumerate(samples):
        ids = _ids(smp)
        pixels = preprocess([smp.image], cfg.image_size)
        text = seg.encode_text(list(smp.classes), smp.caption)
        with torch.no_grad():
            summ = seg.attention_summaries(pixels, [text])
            alone = seg.encode_text(list(smp.classes), None)
            scores_alone = seg.refine(seg.attention_summaries(pixels, [alone]), alone.prompts)[0]
        cross = {r: summ[f"cross_{r}"].float() for r in cfg.resolutions}
        tm = text.prompts.token_matrix(cross[s].shape[-1])
        selfs = {r: summ[f"self_{r}"] for r in cfg.resolutions if r != s}

        def refine(cw=cfg.cross_weights, sw=cfg.self_weights, use_hard=True):
            maps = class_maps_fused(cross, cw, tm, s)
            m = hard(maps, selfs, summ[f"q_{s}"], summ[f"k_{s}"], sw, cfg.tau) if use_hard else minmax_normalize(maps)
            return m

        full_m = refine()
        out = {"full": ttf(full_m, cfg.image_size)[0],
               "no HARD (cross-attention only)": ttf(refine(use_hard=False), cfg.image_size)[0],
               "no TTF": torch.nn.functional.interpolate(full_m[:1], size=(cfg.image_size,) * 2,
                                                         mode="bicubic", align_corners=False)[0],
               "class prompt only (no dual prompts)": scores_alone,
               "HARD with self-attention at the finest grid only":
                   ttf(refine(sw={r: float(r == s) for r in cfg.resolutions}), cfg.image_size)[0]}
        for r in cfg.resolutions:
            if cfg.cross_weights[r]:
                out[f"cross weight {r} = 0"] = ttf(refine(cw=_without(cfg.cross_weights, r)), cfg.image_size)[0]
            if cfg.self_weights[r]:
                out[f"self weight {r} = 0"] = ttf(refine(sw=_without(cfg.self_weights, r)), cfg.image_size)[0]
        for name, sc in out.items():
            lab = _labels(sc, ids, cfg.threshold)
            cms[name].update(smp.mask, lab)
            if name == "full":
                labels.append(lab)
        if i % 50 == 0:
            log(f"[accuracy] method table: picture {i + 1}/{len(samples)}")
    return {n: _metrics(cm) for n, cm in cms.items()}, {"labels": labels}


def _without(weights, r) -> dict:
    """The fusion weights with resolution r's set to 0 and the rest rescaled to the same sum
    (HARD's output is a weighted sum of [0, 1] maps: without the rescale, dropping self weight
    0.5 caps every score at 0.5, under the 0.55 threshold)."""
    total = sum(weights.values())
    rest = total - weights[r]
    return {k: (0.0 if k == r else v * total / rest) for k, v in weights.items()}


def variant_table(make_segmenter, variants, samples, reference: list, log=print) -> dict:
    """{variant: metrics + label agreement with `reference`} for segmenters segmenting the
    samples as a user would (segment_batch, ground-truth candidates, the world's captions)."""
    out = {}
    for name in variants:
        t0 = time.perf_counter()
        try:
            seg, batch = make_segmenter(name)
        except Exception as e:                         # a variant this machine cannot run
            out[name] = {"skipped": f"{type(e).__name__}: {e}"}
            log(f"[accuracy] {name}: skipped ({e})")
            continue
        tally = _Tally()
        for j in range(0, len(samples), batch):
            chunk = samples[j:j + batch]
            res = seg.segment_batch([s.image for s in chunk], [list(s.classes) for s in chunk],
                                    captions=[s.caption for s in chunk], batch_size=batch,
                                    batch_invariant=False)  # a batch variant shares its passes
            for s, r, ref in zip(chunk, res, reference[j:j + batch]):
                tally.add(s, r.labels, ref)
        out[name] = tally.result(t0)
        log(f"[accuracy] {name}: mIoU {out[name]['miou']:.4f}, agreement {out[name]['label_agreement']:.5f}")
    return out


class _Tally:
    """Confusion counts against the exact masks and label agreement with the reference labels,
    for labels that index each picture's candidates (0: background)."""

    def __init__(self):
        self.cm, self.agree, self.total = ConfusionMatrix(len(NAMES) + 1), 0, 0

    def add(self, sample, labels: np.ndarray, reference: np.ndarray) -> None:
        lab = np.where(labels > 0, _ids(sample)[np.maximum(labels - 1, 0)], 0)   # world class ids
        self.cm.update(sample.mask, lab)
        self.agree += int((lab == reference).sum())
        self.total += lab.size

    def result(self, t0: float) -> dict:
        return {**_metrics(self.cm), "label_agreement": self.agree / self.total,
                "seconds": time.perf_counter() - t0}


def reference_row(model: Path, samples, reference: list, side: int, log=print) -> dict:
    """The literal reference path (method/reference.py: dense matrices, one class at a time, the
    published code's order of operations) on the same weights: metrics + label agreement."""
    from faseg_rt.method.reference import ReferenceFASeg
    from faseg_rt.model import load_modules, load_tokenizer

    t0 = time.perf_counter()
    ref = ReferenceFASeg(*load_modules(model), load_tokenizer(model), side=side)
    tally = _Tally()
    for s, mine in zip(samples, reference):
        tally.add(s, ref(s.image, list(s.classes), s.caption)[1], mine)
    out = tally.result(t0)
    log(f"[accuracy] reference: mIoU {out['miou']:.4f}, agreement {out['label_agreement']:.5f}")
    return out


def _metrics(cm: ConfusionMatrix) -> dict:
    iou = cm.iou()
    return {"miou": float(cm.mean_iou()),
            "per_class": {n: (None if np.isnan(v) else float(v)) for n, v in zip(("background",) + NAMES, iou)}}


def table(result: dict) -> str:
    """Markdown tables of a result (method / ablations, then variants)."""
    full = result["method"]["full"]["miou"]
    rows = ["| FA-Seg on the trained toy model | mIoU | vs full |", "|---|---|---|"]
    for name, m in result["method"].items():
        rows.append(f"| {name} | {m['miou']:.3f} | {m['miou'] - full:+.3f} |")
    rows += ["", "| variant | mIoU | vs fp32 (points) | label agreement with fp32 batch 1 |", "|---|---|---|---|"]
    for name, m in result["variants"].items():
        if "skipped" in m:
            rows.append(f"| {name} | not measured | | {m['skipped'][:80]} |")
        else:
            rows.append(f"| {name} | {m['miou']:.3f} | {100 * (m['miou'] - full):+.2f} | "
                        f"{100 * m['label_agreement']:.3f} % |")
    return "\n".join(rows)


def run(model: Path, *, n: int, variants: list[str], out: Path, untrained: Path | None, engines: Path | None,
        log=print) -> dict:
    from faseg_rt import Segmenter
    from faseg_rt.bench.common import machine_info
    from faseg_rt.testing.tiny_sd import small_config

    cfg = small_config(16)
    samples = _world_samples(n, cfg.image_size)
    seg = Segmenter.from_pretrained(model, device="cpu", dtype=torch.float32, config=cfg)
    method, ref = method_table(seg, samples, log)

    def make(name):
        if name == "fp32":
            return seg, 1
        if name == "batch-8":
            return seg, 8
        if name == "bf16":
            return Segmenter.from_pretrained(model, device="cpu", dtype=torch.bfloat16, config=cfg), 1
        if name == "compile":
            return Segmenter.from_pretrained(model, device="cpu", dtype=torch.float32, config=cfg, compile=True), 1
        if name == "onnxruntime":
            return Segmenter.from_pretrained(model, backend="onnxruntime", engines=engines, device="cpu",
                                             dtype=torch.float32, config=cfg), 1
        if name == "untrained":
            return Segmenter.from_pretrained(untrained, device="cpu", dtype=torch.float32, config=cfg), 1
        raise ValueError(f"unknown variant {name!r}")

    table_ = variant_table(make, [v for v in variants if v != "reference"], samples, ref["labels"], log)
    if "reference" in variants:
        table_["reference"] = reference_row(model, samples, ref["labels"], cfg.latent_size, log)
    res = {"model": str(model), "pictures": n, "config": cfg.to_dict(), "machine": machine_info("cpu"),
           "method": method, "variants": table_}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "accuracy.json.tmp"
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out / "accuracy.json")
    print(table(res))
    return res


def main(argv=None) -> int:
    import argparse

    from faseg_rt.threads import apply

    p = argparse.ArgumentParser(prog="accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=None, help="model directory (default: the shipped toy model)")
    p.add_argument("--n", type=int, default=300, help="validation pictures (default 300)")
    p.add_argument("--variants", default="fp32,batch-8,bf16,untrained,reference",
                   help="comma-separated: fp32, batch-8, bf16, compile, onnxruntime, untrained, reference "
                        "(the literal reference path, method/reference.py)")
    p.add_argument("--untrained", type=Path, default=None, help="the untrained model (default: built in OUT)")
    p.add_argument("--engines", type=Path, default=None, help="exported graphs for onnxruntime (default: built in OUT)")
    p.add_argument("--out", type=Path, default=Path("faseg-bench/accuracy"))
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    apply(a.threads or None)
    from faseg_rt.testing.toy_model import MANIFEST, toy_model_dir, untrained_model

    # the shipped model (or a remade one) is checked against its manifest; any other directory is used as is
    model = toy_model_dir(a.model) if a.model is None or (a.model / MANIFEST).exists() else a.model
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    untrained = a.untrained or (untrained_model(a.out / "untrained") if "untrained" in variants else None)
    engines = a.engines
    if "onnxruntime" in variants and engines is None:
        from faseg_rt.engines.build import build

        engines = a.out / "engines"
        build(model, engines, onnx_only=True, latent_size=16, log=lambda m: print(m, file=sys.stderr))
    run(model, n=a.n, variants=variants, out=a.out, untrained=untrained, engines=engines)
    return 0
