"""The evaluation loop end to end with fake segmenters, resume, eval-masks, and the CLI wiring."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from faseg_rt.errors import FASegError
from faseg_rt.eval import open_dataset
from faseg_rt.testing.datasets import (
    candidates_from_labels,
    make_coco_object,
    make_context,
    make_voc,
    write_json,
)
from faseg_rt.eval.loop import evaluate, evaluate_masks, to_dataset_ids
from faseg_rt.io import load_label_png, save_label_png

MAKERS = {"voc": make_voc, "context": make_context, "coco-object": make_coco_object}


class FakeSegmenter:
    """Labels derived from the image's ground truth: each candidate class's pixels get its
    1-based index, except the first row, which always gets candidate 1 (a known error)."""

    def __init__(self, dataset, fail_after=None):
        self.ds = dataset
        self.fail_after = fail_after
        self.calls = []  # (id, classes, caption, threshold) per image

    def segment_batch(self, images, classes, captions=None, batch_size=8, threshold=None,
                      progress=False):
        assert isinstance(classes, list) and len(classes) == len(images)
        out = []
        for k, (path, names) in enumerate(zip(images, classes)):
            assert names, "the loop must not call the segmenter with no classes"
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise RuntimeError("simulated crash")
            image_id = Path(path).stem
            with Image.open(path) as im:
                h, w = im.height, im.width
            gt = self.ds.load_label(image_id)
            labels = np.zeros((h, w), dtype=np.int64)
            for j, name in enumerate(names, start=1):
                labels[gt == self.ds.class_id(name)] = j
            labels[0, :] = 1
            self.calls.append((image_id, tuple(names), captions[k] if captions else None,
                               threshold))
            out.append(SimpleNamespace(labels=labels, classes=tuple(names)))
        return out


def expected_prediction(gt, cand_ids):
    """What FakeSegmenter's output must become in dataset ids, built independently."""
    if not cand_ids:
        return np.zeros_like(gt)
    pred = np.where(np.isin(gt, cand_ids), gt, 0).astype(np.uint8)
    pred[0, :] = cand_ids[0]
    return pred


def naive_iou(pairs, n):
    """Per-class IoU (None if absent) with plain sums over all images."""
    tp, g, p = np.zeros(n), np.zeros(n), np.zeros(n)
    for gt, pred in pairs:
        keep = gt != 255
        for c in range(n):
            g[c] += np.sum((gt == c) & keep)
            p[c] += np.sum((pred == c) & keep)
            tp[c] += np.sum((gt == c) & (pred == c) & keep)
    return [None if g[c] + p[c] == 0 else 100 * tp[c] / (g[c] + p[c] - tp[c]) for c in range(n)]


def check_metrics(metrics, ds, pairs):
    want = naive_iou(pairs, ds.num_classes)
    got = [metrics["per_class"][name] for name in ds.class_names]
    for w, g in zip(want, got):
        assert (g is None) if w is None else g == pytest.approx(w, abs=1e-3)
    present = [w for w in want if w is not None]
    assert metrics["mIoU"] == pytest.approx(sum(present) / len(present), abs=1e-3)


@pytest.mark.parametrize("kind", list(MAKERS))
def test_evaluate_end_to_end(tmp_path, kind):
    split = MAKERS[kind](tmp_path / "data", n_images=5)
    ds = open_dataset(kind, split.root)
    cands = candidates_from_labels(split.labels, ds.class_names)
    ids = list(split.ids)
    cands[ids[1]] = ""                               # empty -> all background, no model call
    cands[ids[2]] = cands[ids[2]] + " unicorn"       # unknown name: warned, left out
    del cands[ids[3]]                                # missing id -> no candidates
    caps = {ids[0]: "a photo", ids[2]: ""}
    fake = FakeSegmenter(ds)
    with pytest.warns(UserWarning, match="unicorn"):
        m = evaluate(fake, ds, tmp_path / "out", candidates=cands, captions=caps, batch_size=2,
                     progress=False, report_images=3)

    called = {c[0]: c for c in fake.calls}
    assert sorted(called) == sorted([ids[0], ids[2], ids[4]])
    assert called[ids[0]][2] == "a photo" and called[ids[2]][2] is None
    assert all(c[3] == ds.default_threshold for c in fake.calls)
    assert "unicorn" not in called[ids[2]][1]

    pairs = []
    for i in ids:
        cand_names = called[i][1] if i in called else ()
        want = expected_prediction(split.labels[i], [ds.class_id(n) for n in cand_names])
        mask_path = tmp_path / "out" / "masks" / f"{i}.png"
        with Image.open(mask_path) as im:
            assert im.mode == "P"
        got = load_label_png(mask_path)
        np.testing.assert_array_equal(got, want)     # original size, dataset ids
        pairs.append((split.labels[i], want))
    check_metrics(m, ds, pairs)
    assert m["mIoU"] < 100
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["mIoU"] == m["mIoU"] and on_disk["dataset"] == kind
    assert on_disk["images"] == 5 and on_disk["threshold"] == ds.default_threshold
    assert on_disk["images_without_candidates"] == 2
    assert on_disk["unknown_candidate_names"] == {"unicorn": 1}
    with Image.open(tmp_path / "out" / "report.png") as im:
        assert im.size[0] > 3 * 24


def test_without_candidates_every_image_gets_all_classes(tmp_path):
    split = make_voc(tmp_path / "d", n_images=3)
    ds = open_dataset("voc", split.root)
    fake = FakeSegmenter(ds)
    m = evaluate(fake, ds, tmp_path / "out", limit=2, threshold=0.3, progress=False,
                 report_images=0)
    assert [c[1] for c in fake.calls] == [ds.class_names[1:]] * 2
    assert all(c[2] is None and c[3] == 0.3 for c in fake.calls)
    assert m["images"] == 2 and m["threshold"] == 0.3
    assert not (tmp_path / "out" / "report.png").exists()


def test_resume_after_interruption(tmp_path):
    split = make_context(tmp_path / "d", n_images=5)
    ds = open_dataset("context", split.root)
    cands = candidates_from_labels(split.labels, ds.class_names)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(FakeSegmenter(ds, fail_after=2), ds, out, candidates=cands, batch_size=1,
                 progress=False)
    masks = sorted(p.name for p in (out / "masks").iterdir())
    assert masks == [f"{i}.png" for i in split.ids[:2]]          # no partial or temp files
    assert not (out / "metrics.json").exists()

    fake = FakeSegmenter(ds)
    m = evaluate(fake, ds, out, candidates=cands, batch_size=2, progress=False)
    assert [c[0] for c in fake.calls] == list(split.ids[2:])     # done ones skipped
    assert m["reused_masks"] == 2 and m["predicted_this_run"] == 3

    fresh = evaluate(FakeSegmenter(ds), ds, tmp_path / "fresh", candidates=cands,
                     progress=False)
    assert m["per_class"] == fresh["per_class"] and m["mIoU"] == fresh["mIoU"]

    # a larger --limit on the same directory reuses what is there
    more = evaluate(FakeSegmenter(ds), ds, tmp_path / "fresh2", candidates=cands, limit=2,
                    progress=False)
    assert more["images"] == 2
    fake = FakeSegmenter(ds)
    more = evaluate(fake, ds, tmp_path / "fresh2", candidates=cands, progress=False)
    assert more["reused_masks"] == 2 and len(fake.calls) == 3

    # other settings must not be mixed into the same masks directory
    with pytest.raises(FASegError, match="threshold"):
        evaluate(FakeSegmenter(ds), ds, out, candidates=cands, threshold=0.9, progress=False)


def test_prediction_index_maps_back_to_dataset_ids(tmp_path):
    ds = open_dataset("voc", make_voc(tmp_path, n_images=1).root)
    labels = np.array([[0, 1, 2], [2, 1, 0]])
    got = to_dataset_ids(labels, ("tv monitor", "cat"), ds)
    assert got.tolist() == [[0, 20, 8], [8, 20, 0]]
    with pytest.raises(FASegError):
        to_dataset_ids(np.array([[3]]), ("tv monitor", "cat"), ds)


def _write_predictions(ds, split, pred_dir):
    pairs = []
    for k, i in enumerate(split.ids):
        gt = split.labels[i]
        pred = np.where(gt == 255, 0, gt).astype(np.uint8)
        pred[: gt.shape[0] // 2, :] = 0           # drop the top half
        save_label_png(pred, pred_dir / f"{i}.png")
        pairs.append((gt, pred))
    return pairs


def test_evaluate_masks(tmp_path):
    split = make_coco_object(tmp_path / "coco", n_images=4, annotation_dir="annotation_object_p")
    ds = open_dataset("coco-object", split.root)
    pairs = _write_predictions(ds, split, tmp_path / "pred")
    m = evaluate_masks(ds, tmp_path / "pred", out_dir=tmp_path / "scores", report_images=2)
    check_metrics(m, ds, pairs)
    assert m["resized_predictions"] == 0
    assert json.loads((tmp_path / "scores" / "metrics.json").read_text())["mIoU"] == m["mIoU"]
    assert (tmp_path / "scores" / "report.png").exists()

    # a prediction at another size is resized with nearest neighbour, like the published script
    i = split.ids[0]
    small = load_label_png(tmp_path / "pred" / f"{i}.png")[::2, ::2]
    save_label_png(small, tmp_path / "pred" / f"{i}.png")
    assert evaluate_masks(ds, tmp_path / "pred")["resized_predictions"] == 1


# --- CLI wiring, through `faseg-rt` itself ---------------------------------------------

def _run(argv):
    from faseg_rt.cli import main

    return main(argv)


def test_cli_eval(tiny_model_dir, small_config_file, tmp_path, capsys):
    """The real command on the tiny model at the 64 px small config (--config)."""
    split = make_voc(tmp_path / "VOC2012", n_images=3)
    ds = open_dataset("voc", split.root)
    cands = write_json(tmp_path / "cand.json", candidates_from_labels(split.labels,
                                                                      ds.class_names))
    caps = write_json(tmp_path / "cap.json", {split.ids[0]: "a caption"})
    rc = _run(["eval", "--dataset", "voc", "--root", str(split.root), "--out",
               str(tmp_path / "out"), "--candidates", str(cands), "--captions", str(caps),
               "--model", str(tiny_model_dir), "--config", str(small_config_file), "--device",
               "cpu", "--dtype", "float32", "--batch-size", "2", "--report-images", "0",
               "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| class | IoU (%) |" in printed and "**mIoU**" in printed
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["model"] == str(tiny_model_dir) and m["candidates"] == str(cands) and m["images"] == 3
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 3


def test_cli_eval_masks_and_errors(tmp_path, capsys):
    split = make_context(tmp_path / "VOC2010", n_images=3)
    ds = open_dataset("context", split.root)
    pairs = _write_predictions(ds, split, tmp_path / "pred")
    rc = _run(["eval-masks", "--dataset", "context", "--root", str(split.root), "--pred",
               str(tmp_path / "pred"), "--out", str(tmp_path / "s")])
    assert rc == 0
    check_metrics(json.loads((tmp_path / "s" / "metrics.json").read_text()), ds, pairs)
    capsys.readouterr()

    (tmp_path / "pred" / f"{split.ids[1]}.png").unlink()
    rc = _run(["eval-masks", "--dataset", "context", "--root", str(split.root), "--pred",
               str(tmp_path / "pred")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing" in err and err.count("\n") == 1

    rc = _run(["eval", "--dataset", "voc", "--root", str(tmp_path / "nowhere"), "--out",
               str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("faseg-rt: error:") and err.count("\n") == 1

    with pytest.raises(SystemExit):
        _run(["eval", "--dataset", "voc", "--root", "x", "--out", "y", "--threshold", "1.5"])
