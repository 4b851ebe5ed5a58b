"""Large vocabularies end to end on the tiny model at 64 px: `segment` with 300 classes, the
`label` worker with 1000, `eval --candidates gt` and all-847-class eval on ADE20K-847 look-alikes,
and `eval-masks` reading the 16-bit masks back.

The commands run the tiny model at the 64 px `small_config` of the `small_segmenter` fixture
through their `--config` option.
"""

import json

import numpy as np
import pytest
from PIL import Image

from faseg_rt.bench.vocab import large_vocabulary
from faseg_rt.cli import main
from faseg_rt.eval import open_dataset
from faseg_rt.testing.datasets_openvocab import make_ade847
from faseg_rt.eval.loop import evaluate, evaluate_masks
from faseg_rt.io import load_label_png
from faseg_rt.testing import synthetic_image


def _check_mask(path, want):
    with Image.open(path) as m:
        assert m.mode == ("P" if want.max() <= 255 else "I;16")
    assert np.array_equal(load_label_png(path), want)


@pytest.mark.slow
def test_segment_command_with_300_classes(tiny_model_dir, small_segmenter, small_config_file, tmp_path):
    classes = list(large_vocabulary()[:300])
    img = synthetic_image(50, 40, seed=5)
    img.save(tmp_path / "photo.png")
    with pytest.warns(UserWarning, match="the full prompt is"):   # the prompt P is truncated
        rc = main(["segment", str(tmp_path / "photo.png"), "--classes", ",".join(classes),
                   "--threshold", "0", "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"),
                   "--overlay", "--quiet", "--config", str(small_config_file)])
    assert rc == 0
    small_segmenter.clear_text_cache()               # built here, so its warning is raised here
    with pytest.warns(UserWarning, match="the full prompt is"):
        want = small_segmenter(img, classes=classes, threshold=0.0)
    assert want.scores is None
    _check_mask(tmp_path / "out/photo.png", want.labels)
    with Image.open(tmp_path / "out/photo_overlay.png") as overlay:
        assert overlay.size[1] > 40


@pytest.mark.slow
def test_label_worker_with_1000_classes(tiny_model_dir, small_segmenter, tmp_path):
    from faseg_rt.scale.label import _SegmentWorker

    classes = list(large_vocabulary()[:1000])
    paths = []
    for k in range(2):
        p = tmp_path / f"img{k}.png"
        synthetic_image(40 + 8 * k, 32, seed=10 + k).save(p)
        paths.append(p)
    worker = _SegmentWorker(tiny_model_dir, tmp_path / "out", classes, None, 0.0, batch_size=2,
                            config=small_segmenter.config)
    with pytest.warns(UserWarning, match="the full prompt is"):   # the prompt P is truncated
        rows = worker({"bytes": [p.read_bytes() for p in paths], "path": [str(p) for p in paths]})
    assert list(rows["status"]) == ["ok", "ok"], list(rows["error"])
    small_segmenter.clear_text_cache()
    with pytest.warns(UserWarning, match="the full prompt is"):
        labels = [r.labels for r in small_segmenter.segment_batch(
            [Image.open(p) for p in paths], classes, threshold=0.0, batch_size=2)]
    assert max(int(lab.max()) for lab in labels) > 255    # the 16-bit path is exercised
    for p, lab in zip(paths, labels):
        _check_mask(tmp_path / "out" / f"{p.stem}.png", lab)


@pytest.fixture(scope="module")
def ade847(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade") / "ADE20K_2021_17_01"
    make_ade847(root, n_images=2, size=(20, 28))
    return root


def test_eval_oracle_and_eval_masks_on_ade847(tiny_model_dir, small_config_file, ade847, tmp_path,
                                              capsys):
    out = tmp_path / "oracle"
    rc = main(["eval", "--dataset", "ade847", "--root", str(ade847.parent), "--out", str(out),
               "--candidates", "gt", "--model", str(tiny_model_dir), "--report-images", "2",
               "--no-progress", "--config", str(small_config_file)])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["candidates"].startswith("gt (oracle") and metrics["num_classes"] == 847
    ds = open_dataset("ade847", ade847)
    for i in ds.ids:
        pred = load_label_png(out / "masks" / f"{i}.png")
        present = set(np.unique(ds.load_label(i))) - {65535}
        assert set(np.unique(pred)) <= present          # only ground-truth classes predicted
    rescored = evaluate_masks(ds, out / "masks")
    assert rescored["mIoU"] == metrics["mIoU"]
    rc = main(["eval-masks", "--dataset", "ade847", "--root", str(ade847), "--pred",
               str(out / "masks")])
    assert rc == 0 and f"{metrics['mIoU']:.2f}" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_with_the_whole_847_class_vocabulary(small_segmenter, ade847, tmp_path):
    ds = open_dataset("ade847", ade847)
    small_segmenter.clear_text_cache()
    with pytest.warns(UserWarning, match="the full prompt is"):   # 847 names: P is truncated
        metrics = evaluate(small_segmenter, ds, tmp_path, report_images=0, progress=False)
    assert metrics["threshold"] == 0.0 and metrics["images"] == 2
    masks = [load_label_png(tmp_path / "masks" / f"{i}.png") for i in ds.ids]
    assert all(m.max() < 847 for m in masks)              # threshold 0: every pixel gets a class
    assert evaluate_masks(ds, tmp_path / "masks")["mIoU"] == metrics["mIoU"]
