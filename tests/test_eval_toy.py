"""The toy world as an evaluation dataset (faseg_rt/eval/datasets/toy.py): the generated split is
exactly ToyWorld's pictures, written once and atomically, and `faseg-rt eval --dataset toy` scores
it with the ordinary loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from faseg_rt import cli
from faseg_rt.errors import InvalidInputError
from faseg_rt.eval import open_dataset
from faseg_rt.eval.datasets import toy
from faseg_rt.eval.datasets.toy_world import NAMES, ToyWorld
from faseg_rt.testing.datasets import make_voc


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_split_is_the_worlds_pictures_labels_and_captions(tmp_path):
    ds = open_dataset("toy", tmp_path / "t", count=4)
    assert ds.written and ds.name == "toy" and ds.split == "val" and len(ds) == 4
    assert ds.class_names == ("background", *NAMES) and ds.background and ds.default_threshold == 0.55
    assert ds.ids == [f"val_{i:05d}" for i in range(4)]
    captions = json.loads(ds.captions_file.read_text())
    world = ToyWorld(size=128)
    for index, image_id in enumerate(ds.ids):
        s = world.sample(1000, index)                 # the validation seed of testing/toy_eval.py
        label = ds.load_label(image_id)
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, s.mask)
        with Image.open(ds.image_path(image_id)) as im:
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), np.asarray(s.image))
        assert captions[image_id] == s.caption and ds.image_size(image_id) == (128, 128)
    spec = json.loads((ds.root / "split.json").read_text())
    assert spec == {"format": toy.FORMAT, "split": "val", "seed": 1000, "count": 4,
                    "world": {"size": 128, "max_objects": 3, "caption_form": "sentence", "colours": "class",
                              "kind": "scenes"}}
    train = open_dataset("toy", tmp_path / "train", split="train", count=2)
    np.testing.assert_array_equal(train.load_label("train_00001"), world.sample(0, 1).mask)


def test_reopen_reuses_and_another_count_rewrites(tmp_path):
    root = tmp_path / "t"
    open_dataset("toy", root, count=4)
    before = _mtimes(root)
    again = open_dataset("toy", root, count=4)
    assert not again.written and _mtimes(root) == before and "using 4 pictures" in again.root_note
    more = open_dataset("toy", root, count=5)
    assert more.written and len(more) == 5 and json.loads((root / "split.json").read_text())["count"] == 5
    assert sorted(p.name for p in (root / "labels").iterdir()) == [f"val_{i:05d}.png" for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]       # no temporary folder left


def test_a_failure_mid_write_leaves_no_partial_folder(tmp_path, monkeypatch):
    real, calls = toy.save_label_png, []

    def failing(labels, path):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        real(labels, path)

    monkeypatch.setattr(toy, "save_label_png", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        open_dataset("toy", tmp_path / "t", count=4)
    assert list(tmp_path.iterdir()) == []
    # an older split stays whole when writing its replacement fails
    monkeypatch.setattr(toy, "save_label_png", real)
    open_dataset("toy", tmp_path / "t", count=2)
    before = _mtimes(tmp_path / "t")
    monkeypatch.setattr(toy, "save_label_png", failing)
    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        open_dataset("toy", tmp_path / "t", count=4)
    assert _mtimes(tmp_path / "t") == before and [p.name for p in tmp_path.iterdir()] == ["t"]


def test_roots_default_cache_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setenv("FASEG_RT_CACHE_DIR", str(tmp_path / "cache"))
    ds = open_dataset("toy", count=2)
    assert ds.root == tmp_path / "cache" / "toy" / "val-128-2"
    (tmp_path / "empty").mkdir()
    assert open_dataset("toy", tmp_path / "empty", count=1).written    # an empty folder is used
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    with pytest.raises(InvalidInputError, match="holds other files and no split.json"):
        open_dataset("toy", tmp_path / "busy", count=1)
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep"
    with pytest.raises(InvalidInputError, match="split must be one of val, train"):
        open_dataset("toy", tmp_path / "x", split="test")
    with pytest.raises(InvalidInputError, match="a root folder is required"):
        open_dataset("voc")
    with pytest.raises(InvalidInputError, match="takes no options"):
        open_dataset("voc", tmp_path, count=3)


def test_cli_dataset_errors(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["eval", "--dataset", "voc", "--out", out]) == 2
    assert "--root is required for --dataset voc: point it at VOCdevkit/VOC2012" in capsys.readouterr().err
    assert cli.main(["eval-masks", "--dataset", "ade150", "--toy-count", "3", "--pred", out]) == 2
    assert "--toy-count applies to --dataset toy only" in capsys.readouterr().err
    split = make_voc(tmp_path / "VOC2012", n_images=1)
    assert cli.main(["eval", "--dataset", "voc", "--root", str(split.root), "--out", out,
                     "--captions", "dataset"]) == 2
    assert "--dataset voc ships no captions" in capsys.readouterr().err


def test_cli_eval_toy_end_to_end(tiny_model_dir, small_config_file, tmp_path, capsys):
    """The real command on the tiny model (64 px config) with the oracle's candidates and the
    split's own captions: the ordinary loop writes masks and metrics with the 13 toy classes."""
    root, out = tmp_path / "toy", tmp_path / "out"
    rc = cli.main(["eval", "--dataset", "toy", "--root", str(root), "--toy-count", "4", "--limit", "2",
                   "--candidates", "gt", "--captions", "dataset", "--out", str(out),
                   "--model", str(tiny_model_dir), "--config", str(small_config_file), "--device", "cpu",
                   "--dtype", "float32", "--threads", "1", "--batch-size", "2", "--report-images", "1",
                   "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"toy: wrote 4 pictures of the val split (seed 1000, 128 px) in {root}" in captured.err
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["per_class"]) == {"background", *NAMES} and m["num_classes"] == 13   # background + 12
    assert m["dataset"] == "toy" and m["split"] == "val" and m["images"] == 2
    assert m["captions"] == str(root / "captions.json") and m["candidates"].startswith("gt")
    assert sorted(p.name for p in (out / "masks").glob("*.png")) == ["val_00000.png", "val_00001.png"]
    assert (out / "report.png").exists()
