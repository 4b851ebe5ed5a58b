"""How well candidate class lists match the ground truth: precision and recall of class presence.

FA-Seg segments only the candidates it is given, so a class missing from the list can never be
found (recall caps the mIoU) and a wrong one steals pixels (precision).  The published VOC lists
reach precision 0.86 and recall 0.83.  These counts put the recogniser (and, when given, the
published lists) on the same scale, and a sweep over thresholds from the stored scores shows a
user which candidate threshold suits their data without segmenting anything again.

Definitions (micro-averaged over (image, class) pairs; background never counts):
    true  = classes with at least one ground-truth pixel (ids 1..num_classes-1; ignore excluded)
    precision = sum |kept & true| / sum |kept|      recall = sum |kept & true| / sum |true|
A run that keeps nothing anywhere has precision None (undefined), not 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from faseg_rt.frontend.candidates import select
from faseg_rt.frontend.defaults import DEFAULT_MAX_CANDIDATES

#: Thresholds of the sweep: log-spaced where SigLIP's probabilities live, up to 0.5.
SWEEP_THRESHOLDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def true_classes(label: np.ndarray, class_names: Sequence[str]) -> set[str]:
    """Names of the classes with ground-truth pixels (background and ignore left out)."""
    ids = np.unique(np.asarray(label))
    return {class_names[int(i)] for i in ids if 0 < int(i) < len(class_names)}


@dataclass
class PresenceCounts:
    """Running totals over images of kept, true and correct (kept and true) classes."""

    kept: int = 0
    true: int = 0
    correct: int = 0
    images: int = 0
    most_kept: int = 0

    def update(self, kept: Iterable[str], true: Iterable[str]) -> None:
        kept, true = set(kept), set(true)
        self.kept += len(kept)
        self.true += len(true)
        self.correct += len(kept & true)
        self.images += 1
        self.most_kept = max(self.most_kept, len(kept))

    def summary(self) -> dict:
        return {"precision": round(self.correct / self.kept, 4) if self.kept else None,
                "recall": round(self.correct / self.true, 4) if self.true else None,
                "images": self.images,
                "mean_candidates": round(self.kept / self.images, 3) if self.images else None,
                "max_candidates": self.most_kept,
                "mean_true_classes": round(self.true / self.images, 3) if self.images else None}


@dataclass
class ScoreSweep:
    """Precision / recall at several thresholds, from each image's (K,) class scores."""

    vocabulary: tuple[str, ...]
    max_candidates: int
    thresholds: tuple[float, ...] = SWEEP_THRESHOLDS
    counts: list[PresenceCounts] = field(default_factory=list)

    def __post_init__(self):
        self.counts = [PresenceCounts() for _ in self.thresholds]

    def update(self, scores: np.ndarray, true: Iterable[str]) -> None:
        true = set(true)
        for thr, c in zip(self.thresholds, self.counts):
            c.update((self.vocabulary[i] for i in select(np.asarray(scores), thr, self.max_candidates)),
                     true)

    def summary(self) -> list[dict]:
        return [{"threshold": t, **c.summary()} for t, c in zip(self.thresholds, self.counts)]


def presence_markdown(presence: dict) -> str:
    """A short table: each candidate source's precision / recall, then the threshold sweep."""
    lines = ["| candidates | precision | recall | mean per image | max |", "|---|---|---|---|---|"]

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    for name in ("front_end", "caption", "recogniser", "published"):
        s = presence.get(name)
        if s:
            lines.append(f"| {name.replace('_', ' ')} | {fmt(s['precision'])} | {fmt(s['recall'])} | "
                         f"{fmt(s['mean_candidates'])} | {s['max_candidates']} |")
    sweep = presence.get("sweep")
    if sweep:
        lines += ["", "| recogniser threshold | precision | recall | mean per image |", "|---|---|---|---|"]
        lines += [f"| {s['threshold']} | {fmt(s['precision'])} | {fmt(s['recall'])} | "
                  f"{fmt(s['mean_candidates'])} |" for s in sweep]
    return "\n".join(lines)


def _sidecar_presence(ids, sidecars: Path, truth: dict, max_candidates: int | None) -> dict:
    """Presence counts of the front end's candidates (all, and per source: a source's row is
    there when some image has a class from it) and the recogniser's threshold sweep, from the
    <id>.json files."""
    counts = {"front_end": PresenceCounts(), "caption": PresenceCounts(),
              "recogniser": PresenceCounts()}
    seen, sweep, missing = set(), None, 0
    for i in ids:
        path = Path(sidecars) / f"{i}.json"
        if not path.exists():
            missing += 1
            continue
        side = json.loads(path.read_text())
        counts["front_end"].update(side["candidates"], truth[i])
        sources = side.get("sources") or {}
        for name, source in (("caption", "caption"), ("recogniser", "recognizer")):
            counts[name].update((c for c, s in sources.items() if source in s), truth[i])
            seen.update(name for s in sources.values() if source in s)
        if side.get("scores") is not None:
            vocab = tuple(side["classes"])
            if sweep is None:
                sweep = ScoreSweep(vocab, max_candidates or DEFAULT_MAX_CANDIDATES)
            sweep.update(np.array([side["scores"][c] for c in vocab], dtype=np.float32), truth[i])
    out = {"front_end": dict(counts["front_end"].summary(), images_without_record=missing)}
    out.update({name: counts[name].summary() for name in ("caption", "recogniser") if name in seen})
    if sweep is not None:
        out["sweep"] = sweep.summary()
    return out


def class_presence(dataset, ids: Sequence[str], sidecars: Path | None,
                   published: Mapping[str, Sequence[str]] | None,
                   max_candidates: int | None = None) -> dict:
    """Precision / recall of class presence for the front end's candidates (all of them, and
    those each source found: "caption", "recogniser") and the published lists.

    sidecars: the masks directory holding <id>.json files written with a candidate mode (kept
    candidates, their sources and every class's score), or None; published: image id ->
    candidate names, or None.  The recogniser's threshold sweep re-selects from the stored
    scores with `max_candidates` (None: the recogniser's default).
    """
    out: dict = {"definition": "micro-averaged over (image, class) pairs; background excluded"}
    truth = {i: true_classes(dataset.load_label(i), dataset.class_names) for i in ids}
    if sidecars is not None:
        out.update(_sidecar_presence(ids, sidecars, truth, max_candidates))
    if published is not None:
        counts = PresenceCounts()
        for i in ids:
            counts.update(published.get(i, ()), truth[i])
        out["published"] = counts.summary()
    return out
