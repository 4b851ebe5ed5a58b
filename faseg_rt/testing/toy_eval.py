"""Score a model on the toy world: FA-Seg's mIoU and a cheaper direct signal of localisation.

- mIoU: FA-Seg with the ground-truth classes of each picture as candidates and its caption,
  confusion counts over the whole set (eval/metrics.py), background + every class of the world;
  at the configured threshold and, from the same scores, at each threshold of THRESHOLDS.
- Attention signal (no HARD, no threshold): the class-aware cross-attention map of each present
  class at resolution r (the capture's `cross_r`, image half only) against the object's mask on
  the r x r grid: `ratio` = mean attention on cells the object covers (>= half) / mean on cells
  it does not touch (1.0: no localisation), and `pointing` = how often the map's maximum lies
  on the object (chance: the object's share of the picture).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from faseg_rt.eval.metrics import ConfusionMatrix
from faseg_rt.images import preprocess
from faseg_rt.testing.tiny_sd import small_config
from faseg_rt.testing.toy_grounding import coverage
from faseg_rt.eval.datasets.toy_world import NAMES, ToyWorld

THRESHOLDS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8)


def toy_config(size: int):
    """The small config at the world's picture size (latent size / 8)."""
    return small_config(size // 8)


def evaluate(segmenter, world: ToyWorld, *, n: int = 40, seed: int = 1000) -> dict:
    """{miou, miou_best, best_threshold, per_class, ratio{r}, pointing{r}} on n pictures of the
    split `seed` (the validation split: another seed than training's)."""
    cfg = segmenter.config
    sig = _signal_segmenter(segmenter)
    cms = {t: ConfusionMatrix(len(NAMES) + 1) for t in THRESHOLDS}
    ratios: dict[int, list] = {r: [] for r in cfg.resolutions}
    points: dict[int, list] = {r: [] for r in cfg.resolutions}
    for i in range(n):
        s = world.sample(seed, i)
        ids = np.asarray([NAMES.index(c) + 1 for c in s.classes])
        text, summ = _reconstruct(sig, s)
        # FA-Seg's scores from the same pass: the configured fusion reads only its own grids
        scores = segmenter.refine(summ, text.prompts)[0].numpy()                 # (k, size, size)
        best, arg = scores.max(0), scores.argmax(0)
        for t, cm in cms.items():
            cm.update(s.mask, np.where(best >= t, ids[arg], 0))
        _attention_signal(sig.config, s, text, summ, ratios, points)
    ref = min(THRESHOLDS, key=lambda t: abs(t - cfg.threshold))
    mious = {t: float(cm.mean_iou()) for t, cm in cms.items()}
    best_t = max(mious, key=mious.get)
    iou = cms[ref].iou()
    return {"miou": mious[ref], "threshold": ref, "miou_best": mious[best_t], "best_threshold": best_t,
            "miou_by_threshold": mious,
            "per_class": {name: _num(v) for name, v in zip(("background",) + NAMES, iou)},
            "ratio": {r: float(np.mean(v)) for r, v in ratios.items() if v},
            "pointing": {r: float(np.mean(v)) for r, v in points.items() if v}}


def _signal_segmenter(segmenter):
    """A sibling segmenter on the same modules whose capture computes every resolution's cross
    maps (the configured one skips those with fusion weight 0); its summaries serve both the
    signal and FA-Seg's own refinement, so each picture takes one pass."""
    from faseg_rt.segmenter import Segmenter

    cfg = segmenter.config
    w = 1.0 / len(cfg.resolutions)
    sig_cfg = replace(cfg, cross_weights={r: w for r in cfg.resolutions})
    return Segmenter(segmenter.backend.for_config(sig_cfg), segmenter.tokenizer, sig_cfg)


@torch.no_grad()
def _reconstruct(seg, sample):
    """(TextEmbeddings, unet_attn summaries) of one picture: encode, invert, reconstruct."""
    text = seg.encode_text(list(sample.classes), sample.caption)
    return text, seg.attention_summaries(preprocess([sample.image], seg.config.image_size), [text])


def _attention_signal(cfg, sample, text, summ: dict, ratios: dict, points: dict) -> None:
    tm = text.prompts.token_matrix(summ[f"cross_{cfg.resolutions[0]}"].shape[-1])  # (J*77, K)
    for r in cfg.resolutions:
        cross = summ[f"cross_{r}"][0].float()                                 # (J, r*r, 77)
        maps = torch.einsum("jpt,jtk->kp", cross, tm.reshape(cross.shape[0], cross.shape[2], -1))
        for k, name in enumerate(sample.classes):
            cover = coverage(sample.mask == NAMES.index(name) + 1, r)           # (r*r,)
            m = maps[k].numpy()
            inside, outside = m[cover >= 0.5], m[cover == 0]
            if inside.size and outside.size:
                ratios[r].append(float(inside.mean() / max(outside.mean(), 1e-12)))
            points[r].append(float(cover[int(m.argmax())] > 0))


def _num(v) -> float | None:
    return None if np.isnan(v) else float(v)
