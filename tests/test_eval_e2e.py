"""`faseg-rt eval` with the real Segmenter on the tiny model: the saved masks are exactly the
Segmenter's labels mapped to dataset ids, and the metrics are computed from those masks."""

import json

import numpy as np
import pytest

from faseg_rt import cli
from faseg_rt.eval import open_dataset
from faseg_rt.testing.datasets import candidates_from_labels, make_voc, write_json
from faseg_rt.eval.inputs import build_vocabulary, split_candidate_string
from faseg_rt.eval.metrics import ConfusionMatrix
from faseg_rt.io import load_label_png

pytestmark = pytest.mark.slow  # a whole evaluation with the 512 px model: the slow tier (CI runs it)


def test_eval_command_with_real_segmenter(tmp_path, tiny_model_dir, segmenter, capsys):
    split = make_voc(tmp_path / "VOC2012", n_images=3, size=(40, 56))
    ds = open_dataset("voc", split.root)
    cands = candidates_from_labels(split.labels, ds.class_names)
    cand_file = write_json(tmp_path / "cand.json", cands)
    caps = write_json(tmp_path / "cap.json", {split.ids[0]: "a photo of shapes"})
    out = tmp_path / "out"
    rc = cli.main(["eval", "--dataset", "voc", "--root", str(split.root), "--out", str(out),
                   "--candidates", str(cand_file), "--captions", str(caps), "--model",
                   str(tiny_model_dir), "--device", "cpu", "--dtype", "float32", "--limit", "2",
                   "--batch-size", "2", "--report-images", "2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2 and metrics["predicted_this_run"] == 2

    cm = ConfusionMatrix(ds.num_classes)
    for i in split.ids[:2]:
        # the candidate string is space separated; multi-word names come from the dataset list
        names = list(split_candidate_string(cands[i], build_vocabulary(ds.class_names[1:], ds.aliases))[0])
        res = segmenter(str(ds.image_path(i)), classes=names,
                        caption="a photo of shapes" if i == split.ids[0] else None,
                        threshold=ds.default_threshold)
        lut = np.array([0] + [ds.class_id(n) for n in names], dtype=np.uint8)
        expected = lut[res.labels]
        saved = load_label_png(out / "masks" / f"{i}.png")
        np.testing.assert_array_equal(saved, expected)
        cm.update(ds.load_label(i), expected)
    assert abs(cm.summary(ds.class_names)["mIoU"] - metrics["mIoU"]) < 1e-9
    assert (out / "report.png").exists()
