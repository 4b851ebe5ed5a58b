"""The evaluation loop: segment a dataset split, save masks, score mIoU, draw a report.

`evaluate` needs only an object with `segment_batch(images, classes, captions=None,
batch_size=..., threshold=..., progress=...)` returning results with `.labels` ((H, W) ints,
0 = background, k = classes[k-1]); so it runs the real `faseg_rt.Segmenter` and the small fakes
of the tests alike. Output directory:

    masks/<id>.png   palette PNG of dataset class ids at the original image size (16-bit PNG
                     for benchmarks with ids past 255: ADE20K-847, Context-459)
    masks/<id>.json  with captions "auto" or a candidate mode: caption, kept candidates and
                     their sources, class scores
    run.json         the settings the masks were made with (checked when resuming)
    metrics.json     mIoU and per-class IoU in percent, plus how they were obtained (and the
                     torch threads used, faseg_rt.threads.current)
    report.png       image | ground truth | prediction for the first images

Masks are written atomically and an image whose mask exists is skipped, so an interrupted run
resumes where it stopped; all masks (old and new) are scored together at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from faseg_rt import rules
from faseg_rt.errors import FASegError, InvalidInputError
from faseg_rt.eval.datasets.base import SegDataset
from faseg_rt.eval.inputs import read_id_string_json, resolve_candidates, resolve_captions
from faseg_rt.eval.metrics import ConfusionMatrix
from faseg_rt.eval.presence import class_presence
from faseg_rt.eval.report import write_report
from faseg_rt.frontend.candidates import MODES
from faseg_rt.io import atomic_write_json, load_label_png, remove_stale_temps, save_label_png
from faseg_rt.threads import current as current_threads

StrMap = Mapping[str, str]


def _load_inputs(src: StrMap | str | os.PathLike | None, what: str) -> tuple[StrMap | None, Any]:
    """(mapping or None, JSON-able description of where it came from)."""
    if src is None:
        return None, None
    if isinstance(src, Mapping):
        return src, "<in memory>"
    return read_id_string_json(src, what), str(src)


def _is_auto(src) -> bool:
    return isinstance(src, str) and src == "auto"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _id_dtype(dataset: SegDataset) -> type:
    return np.uint8 if max(dataset.num_classes - 1, dataset.no_class_label) <= 255 else np.uint16


def to_dataset_ids(labels: np.ndarray, names: tuple[str, ...], dataset: SegDataset) -> np.ndarray:
    """Map a prediction over a candidate list (0 = below threshold, k = names[k-1]) to class ids;
    label 0 becomes background, or `dataset.no_class_label` where there is no background."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise FASegError(f"segmenter returned labels of shape {labels.shape}, expected (H, W)")
    if labels.size and (labels.min() < 0 or labels.max() > len(names)):
        raise FASegError(f"segmenter returned label {int(labels.max())} for {len(names)} classes")
    lut = np.array([dataset.no_class_label] + [dataset.class_id(n) for n in names],
                   dtype=_id_dtype(dataset))
    return lut[labels]


GT_CANDIDATES = "gt"
GT_DESCRIPTION = "gt (oracle: the ground-truth classes present in each image)"


def gt_candidates(dataset: SegDataset, ids: list[str]) -> dict[str, tuple[str, ...]]:
    """The oracle: per image, the classes present in its ground truth (ignore and background
    left out), in class-id order. For isolating segmentation quality from recognition only."""
    out = {}
    for i in ids:
        present = np.unique(dataset.load_label(i))
        first = 1 if dataset.background else 0
        out[i] = tuple(dataset.class_names[int(c)] for c in present
                       if first <= c < dataset.num_classes)
    return out


def _check_run(out_dir: Path, settings: dict) -> None:
    """Refuse to mix masks made with other settings into one score."""
    path = out_dir / "run.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            old = None
        if old != settings and any((out_dir / "masks").glob("*.png")):
            diff = sorted(k for k in set(old or {}) | set(settings)
                          if (old or {}).get(k) != settings.get(k))
            raise FASegError(f"{out_dir}/masks was made with other settings ({', '.join(diff)} "
                             "differ); use another --out or delete that masks directory")
    atomic_write_json(path, settings)


def _report(out_dir: Path, dataset: SegDataset, ids: list[str], masks_dir: Path, n: int) -> None:
    rows = []
    for i in ids[:n]:
        with Image.open(dataset.image_path(i)) as im:
            image = im.convert("RGB")
        rows.append((i, image, dataset.load_label(i), load_label_png(masks_dir / f"{i}.png")))
    if rows:
        write_report(out_dir / "report.png", rows, dataset.class_names)


@dataclass
class _Inputs:
    """What each image of the split is segmented with, and how the run describes it."""

    cands: dict            # id -> candidate names (all classes, a file's, or the oracle's)
    caps: dict             # id -> caption, None or "auto"
    mode: str | None       # a candidate mode of the front end, or None
    settings: dict         # recorded in run.json (resume check)
    described: dict        # recorded in metrics.json
    published: dict | None  # lists scored for class presence only


def _inputs(dataset: SegDataset, ids: list[str], candidates, captions, published_candidates,
            thr: float, meta) -> _Inputs:
    """Resolve --candidates / --captions (files, modes, the oracle) for the split's ids."""
    oracle = isinstance(candidates, str) and candidates == GT_CANDIDATES
    mode = candidates if isinstance(candidates, str) and candidates in MODES else None
    auto_caps = _is_auto(captions)
    raw_cands, cand_src = ((None, GT_DESCRIPTION) if oracle else
                           _load_inputs(None if mode else candidates, "candidates"))
    raw_caps, cap_src = _load_inputs(None if auto_caps else captions, "captions")
    if oracle:
        cands, unknown = gt_candidates(dataset, ids), {}
    else:
        cands, unknown = resolve_candidates(raw_cands, ids, dataset.class_names, dataset.aliases,
                                            background=dataset.background)
    caps = {i: "auto" for i in ids} if auto_caps else resolve_captions(raw_caps, ids)
    published = cands if raw_cands is not None else None
    if published_candidates is not None:
        published = resolve_candidates(_load_inputs(published_candidates, "published candidates")[0],
                                       ids, dataset.class_names, dataset.aliases,
                                       background=dataset.background)[0]
    settings = {"dataset": dataset.name, "threshold": thr,
                "candidates": mode or (GT_CANDIDATES if oracle else
                                       _digest(dict(raw_cands)) if raw_cands is not None else None),
                "captions": "auto" if auto_caps else _digest(raw_caps) if raw_caps is not None else None,
                **dict(meta or {})}
    described = {"candidates": mode or cand_src, "captions": "auto" if auto_caps else cap_src,
                 "unknown_candidate_names": unknown}
    return _Inputs(cands, caps, mode, settings, described, published)


def _segment_chunk(segmenter, dataset, chunk, inp: _Inputs, thr, batch_size) -> dict:
    """{id: result} for the ids of `chunk` with candidates (segment_batch in one call)."""
    run_ids = [i for i in chunk if inp.cands[i]]
    if not run_ids:
        return {}
    run_caps = [inp.caps[i] for i in run_ids]
    out = segmenter.segment_batch(
        [str(dataset.image_path(i)) for i in run_ids], [list(inp.cands[i]) for i in run_ids],
        captions=run_caps if any(c is not None for c in run_caps) else None,
        batch_size=batch_size, threshold=thr, progress=False,
        **({"candidates": inp.mode} if inp.mode else {}))
    if len(out) != len(run_ids):
        raise FASegError(f"segmenter returned {len(out)} results for {len(run_ids)} images")
    return dict(zip(run_ids, out))


def _run(segmenter, dataset, todo, inp: _Inputs, masks_dir, cm, thr, batch_size, progress) -> dict:
    """Segment `todo`, write masks (and sidecars with the front end), update cm; returns the
    front end's selection rule as applied ({} when the recogniser did not run)."""
    selection: dict = {}
    sidecars = inp.mode is not None or any(c == "auto" for c in inp.caps.values())
    with tqdm(total=len(todo), unit="img", desc=f"eval {dataset.name}", disable=not progress,
              dynamic_ncols=True) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            results = _segment_chunk(segmenter, dataset, chunk, inp, thr, batch_size)
            for i in chunk:
                size = dataset.image_size(i)
                if i in results:
                    pred = to_dataset_ids(results[i].labels, inp.cands[i], dataset)
                    if pred.shape != size:
                        raise FASegError(f"{i}: segmenter returned labels of shape {pred.shape}, "
                                         f"the image is {size}")
                    selection = getattr(results[i], "selection", None) or selection
                else:
                    pred = np.full(size, dataset.no_class_label, dtype=_id_dtype(dataset))
                cm.update(dataset.load_label(i), pred)
                if sidecars and i in results:  # before the mask: resume needs both
                    atomic_write_json(masks_dir / f"{i}.json", results[i].sidecar())
                save_label_png(pred, masks_dir / f"{i}.png")
            bar.update(len(chunk))
    return dict(selection)


def evaluate(segmenter, dataset: SegDataset, out_dir: str | os.PathLike,
             candidates: StrMap | str | os.PathLike | None = None,
             captions: StrMap | str | os.PathLike | None = None,
             limit: int | None = None, batch_size: int = 8, threshold: float | None = None,
             report_images: int = 8, progress: bool = True,
             meta: Mapping[str, Any] | None = None,
             published_candidates: StrMap | str | os.PathLike | None = None) -> dict:
    """Segment the split (or its first `limit` images), save masks, and return the metrics.

    Args:
        segmenter: anything with `segment_batch` (see the module docstring).
        dataset: an opened reader (`faseg_rt.eval.open_dataset`).
        out_dir: where masks/, metrics.json, run.json and report.png go.
        candidates: image id -> candidate string (mapping or JSON file), or "gt": the oracle,
            each image's ground-truth classes. None: every image gets all dataset classes
            except background. An image with no known candidate gets an all-background (or,
            without a background class, all "no class") mask without calling the segmenter.
            A mode ("auto", "caption", "recognizer"): the segmenter's front end picks them per
            image (metrics["presence"] scores it, per source, against the truth).
        captions: image id -> caption (mapping or JSON file). None: no captions. "auto": the
            segmenter's captioner writes them.
        limit: score only the first `limit` ids of the split.
        batch_size: images handed to `segment_batch` at once.
        threshold: background threshold; None = the dataset's published default.
        report_images: rows in report.png (0: no report).
        progress: show a tqdm bar (images/s).
        meta: extra settings (model id, backend, ...) recorded in run.json and metrics.json.
        published_candidates: candidate lists scored for class presence only (beside a mode).
    Every threshold is recorded as used: the background threshold (the dataset's default when
    none was given) and, when the recogniser ran, its candidate_threshold and max_candidates.
    """
    batch_size = rules.batch_size(batch_size)
    limit = None if limit is None else rules.positive_int(limit, "limit")
    thr = rules.threshold(dataset.default_threshold if threshold is None else threshold)
    out_dir = Path(out_dir)
    masks_dir = out_dir / "masks"
    ids = dataset.ids[:limit] if limit else dataset.ids
    inp = _inputs(dataset, ids, candidates, captions, published_candidates, thr, meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_run(out_dir, inp.settings)

    cm = ConfusionMatrix(dataset.num_classes, ignore_index=dataset.ignore_index)
    done = [i for i in ids if (masks_dir / f"{i}.png").exists()]
    todo = [i for i in ids if not (masks_dir / f"{i}.png").exists()]
    # a run killed mid-write leaves temporaries next to the masks it redoes now
    remove_stale_temps(masks_dir, {f"{i}.png" for i in todo})
    remove_stale_temps(out_dir, {"metrics.json", "report.png", "run.json"})
    for i in done:
        cm.update(dataset.load_label(i), load_label_png(masks_dir / f"{i}.png"))
    t0 = time.perf_counter()
    selection = _run(segmenter, dataset, todo, inp, masks_dir, cm, thr, batch_size, progress)
    seconds = time.perf_counter() - t0

    metrics = cm.summary(dataset.class_names)
    metrics.update({
        "dataset": dataset.name, "split": dataset.split, "images": len(ids), "threshold": thr,
        "predicted_this_run": len(todo), "reused_masks": len(done),
        "seconds_this_run": round(seconds, 3),
        "images_per_second": round(len(todo) / seconds, 3) if todo and seconds > 0 else None,
        **inp.described, "images_without_candidates": sum(1 for i in ids if not inp.cands[i]),
        "masks": str(masks_dir), **dict(meta or {}), **selection,
        "threads": current_threads(),  # not in run.json: another count may resume a run
    })
    if inp.mode or inp.published is not None:
        front = getattr(segmenter, "frontend", None)
        metrics["presence"] = class_presence(dataset, ids, masks_dir if inp.mode else None,
                                             inp.published, getattr(front, "max_candidates", None))
    atomic_write_json(out_dir / "metrics.json", metrics)
    if report_images > 0:
        _report(out_dir, dataset, ids, masks_dir, report_images)
    return metrics


def evaluate_masks(dataset: SegDataset, pred_dir: str | os.PathLike,
                   out_dir: str | os.PathLike | None = None, limit: int | None = None,
                   report_images: int = 0) -> dict:
    """Score existing prediction PNGs `pred_dir/<id>.png` (palette or gray class ids).

    A prediction whose size differs from the ground truth is resized with nearest neighbour,
    as the published scripts do (counted in `resized_predictions`); a missing one is an error.
    With `out_dir`, metrics.json (and report.png when report_images > 0) are written there.
    """
    pred_dir = Path(pred_dir)
    limit = None if limit is None else rules.positive_int(limit, "limit")
    ids = dataset.ids[:limit] if limit else dataset.ids
    missing = [i for i in ids if not (pred_dir / f"{i}.png").exists()]
    if missing:
        raise InvalidInputError(f"{len(missing)} of {len(ids)} predictions missing in {pred_dir} "
                                f"(first: {missing[0]}.png)")
    cm = ConfusionMatrix(dataset.num_classes, ignore_index=dataset.ignore_index)
    resized = 0
    for i in ids:
        gt = dataset.load_label(i)
        pred = load_label_png(pred_dir / f"{i}.png")
        if pred.shape != gt.shape:
            resized += 1
            pred = np.array(Image.fromarray(pred).resize((gt.shape[1], gt.shape[0]), Image.NEAREST))
        cm.update(gt, pred)
    metrics = cm.summary(dataset.class_names)
    metrics.update({"dataset": dataset.name, "split": dataset.split, "images": len(ids),
                    "masks": str(pred_dir), "resized_predictions": resized})
    if out_dir is not None:
        out_dir = Path(out_dir)
        atomic_write_json(out_dir / "metrics.json", metrics)
        if report_images > 0:
            _report(out_dir, dataset, ids, pred_dir, report_images)
    return metrics
