"""The front end from the command line: segment's <stem>.json, label's manifest
fields, eval --captions auto --candidates auto with class-presence precision / recall, and the
bad inputs the issue lists (one line, exit 2, nothing written).

The 512 px CLI runs use --candidate-threshold 1.0 (nothing kept: the SD model loads but never
runs), so they check the wiring cheaply; the masks of kept candidates are checked on the 64 px
model through the same functions the commands call.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from faseg_rt.cli import main
from faseg_rt.cli.segment import segment_files
from faseg_rt.frontend import Captioner, Recognizer
from faseg_rt.precision import STAGES

VOCAB = "cat,dog,potted plant,sky,red car"

pytestmark = pytest.mark.usefixtures("one_thread")


def _front_flags(dirs, *extra, mode="auto"):
    return ["--caption", "auto", "--candidates", mode, "--captioner", str(dirs["blip"]),
            "--recognizer", str(dirs["siglip"]), *extra]


def test_segment_command_writes_the_json_beside_the_mask(tiny_model_dir, frontend_dirs, photos,
                                                         tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(photos / "a.png"), "--classes", VOCAB, "--model", str(tiny_model_dir),
               "--out", str(out), "--quiet", *_front_flags(frontend_dirs, "--candidate-threshold", "1",
                                                           mode="recognizer")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    # the recogniser kept nothing at threshold 1: the summary says so, naming the threshold
    assert "1 of 1 mask(s) all background (no class scored >= 1 by the recogniser): a.png" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png"]
    side = json.loads((out / "a.json").read_text())
    assert side.pop("threads")["threads"] == torch.get_num_threads()  # tests/test_threads_cli.py
    assert side.pop("precision") == {s: "float32" for s in STAGES}  # the policy as applied
    caption = Captioner.from_pretrained(frontend_dirs["blip"], device="cpu")([photos / "a.png"])[0]
    rec = Recognizer.from_pretrained(frontend_dirs["siglip"], device="cpu")([photos / "a.png"],
                                                                             VOCAB.split(","))[0]
    assert side == {"classes": VOCAB.split(","), "caption": caption, "candidates": [], "sources": {},
                    "scores": {c: pytest.approx(float(s), abs=1e-6) for c, s in rec.score_dict().items()},
                    "captioner": str(frontend_dirs["blip"]), "recognizer": str(frontend_dirs["siglip"]),
                    "candidate_threshold": 1.0, "max_candidates": 6}
    assert any(0 < abs(v) < 5e-7 or len(repr(v)) > 10 for v in side["scores"].values()), \
        "scores keep their float precision (no rounding to 6 decimals)"


def test_segment_files_with_kept_candidates(auto_segmenter, photos, tmp_path):
    out = tmp_path / "out"
    files = [str(photos / "a.png"), str(photos / "b.png")]
    assert segment_files(auto_segmenter, files, VOCAB.split(","), out, caption="auto",
                         candidates="auto", batch_size=2, progress=False) == []
    for f in files:
        stem = pathlib.Path(f).stem
        side = json.loads((out / f"{stem}.json").read_text())
        assert side.pop("threads")["threads"] == torch.get_num_threads()
        assert side.pop("precision") == auto_segmenter.precision.names()
        res = auto_segmenter(f, classes=VOCAB.split(","), caption="auto", candidates="auto")
        want = json.loads(json.dumps(res.sidecar()))
        # full float precision: a batch of 2 and of 1 differ in the last bits
        want["scores"] = {c: pytest.approx(v, abs=1e-6) for c, v in want["scores"].items()}
        assert side == want
        from faseg_rt.io import load_label_png

        np.testing.assert_array_equal(load_label_png(out / f"{stem}.png"), res.labels)
        assert set(np.unique(res.labels)) <= {0} | {VOCAB.split(",").index(c) + 1 for c in side["candidates"]}


def test_json_is_written_atomically(auto_segmenter, photos, tmp_path, monkeypatch):
    """A write that dies half-way leaves neither a torn <stem>.json nor a temporary file."""
    real = pathlib.Path.write_bytes

    def torn(self, data):   # the mask (also written as bytes) goes through; the JSON is torn
        if ".a.json." not in self.name:
            return real(self, data)
        real(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", torn)
    with pytest.raises(OSError, match="disk full"):
        segment_files(auto_segmenter, [str(photos / "a.png")], ["cat"], tmp_path / "o",
                      caption="a cat", progress=False)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png"]


def test_label_worker_records_the_front_end(tiny_model_dir, frontend_dirs, photos, tmp_path):
    """The Ray worker's rows (run in-process here) carry what the manifest records."""
    from faseg_rt.scale.label import _SegmentWorker
    from faseg_rt.scale.manifest import manifest_fields

    worker = _SegmentWorker(str(tiny_model_dir), str(tmp_path), ["cat", "sky"], "auto", None,
                            device="cpu", candidates="recognizer",
                            frontend={"captioner": frontend_dirs["blip"], "recognizer": frontend_dirs["siglip"],
                                      "candidate_threshold": 1.0})
    path = str(photos / "a.png")
    rows = worker({"bytes": [open(path, "rb").read(), b"not an image"], "path": [path, "bad.png"]})
    assert list(rows["status"]) == ["ok", "error"]
    fields = manifest_fields({"frontend": rows["frontend"][0]})["frontend"]
    assert fields["candidates"] == [] and set(fields["scores"]) == {"cat", "sky"}
    captioner = worker.seg.frontend.captioner(worker.seg.device, worker.seg.precision["captioner"])
    assert fields["caption"] == captioner([path])[0]
    assert fields["recognizer"] == str(frontend_dirs["siglip"])
    assert manifest_fields({"frontend": rows["frontend"][1]}) == {}


def test_segment_sidecar_with_files_names_no_front_end_model(tiny_model_dir, frontend_dirs, photos,
                                                             tmp_path, capsys):
    """Captions and candidates from files run neither model: <stem>.json names none (and no
    selection rule), though --captioner / --recognizer hold their defaults."""
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"a.png": "a cat under the sky"}))
    cands = tmp_path / "cands.json"
    cands.write_text(json.dumps({"a.png": "cat sky"}))
    out = tmp_path / "out"
    config = tmp_path / "small.json"
    from faseg_rt.testing import write_small_config

    write_small_config(config)
    rc = main(["segment", str(photos / "a.png"), "--classes", VOCAB, "--model", str(tiny_model_dir),
               "--captions", str(caps), "--candidates", str(cands), "--out", str(out), "--quiet",
               "--config", str(config)])
    assert rc == 0, capsys.readouterr().err
    side = json.loads((out / "a.json").read_text())
    assert side["caption"] == "a cat under the sky" and side["candidates"] == ["cat", "sky"]
    assert side["captioner"] is None and side["recognizer"] is None and side["scores"] is None
    assert "candidate_threshold" not in side and "max_candidates" not in side


@pytest.mark.parametrize("caption, candidates, named", [
    ({"a.png": "a cat"}, {"a.png": ["cat"]}, set()),                  # both from files
    ("a cat", ["cat"], set()),                                        # both given
    ("a cat", "caption", {"lexicon"}),                                # the caption names candidates
    ("auto", {"a.png": ["cat"]}, {"captioner"}),
    (None, "caption", {"captioner", "lexicon"}),                      # a caption is made for the mode
    ({"a.png": "a cat"}, "recognizer", {"recognizer", "candidate_threshold", "max_candidates"}),
    ("auto", "auto", {"captioner", "recognizer", "candidate_threshold", "max_candidates", "lexicon"}),
])
def test_label_rows_name_only_the_front_end_used(caption, candidates, named):
    """A manifest row's settings name a captioner / recogniser only when the job ran it."""
    from faseg_rt.scale.label import _job_settings

    frontend = {"captioner": "Salesforce/blip", "recognizer": pathlib.Path("siglip"),
                "candidate_threshold": 0.2, "max_candidates": 4, "lexicon": {"cat": ["kitty"]}}
    settings = _job_settings(["cat", "dog"], caption, None, "m", candidates, frontend, False)
    assert set(settings) & set(frontend) == named
    if "recognizer" in named:
        assert settings["recognizer"] == "siglip" and settings["candidate_threshold"] == 0.2


def test_eval_auto_reports_presence(auto_segmenter, tiny_model_dir, frontend_dirs, tmp_path, capsys):
    from faseg_rt.eval.datasets.registry import open_dataset
    from faseg_rt.testing.datasets import candidates_from_labels, make_voc, write_json
    from faseg_rt.eval.loop import evaluate
    from faseg_rt.eval.presence import true_classes

    split = make_voc(tmp_path / "VOC2012", n_images=3, size=(40, 56))
    ds = open_dataset("voc", split.root)
    published = write_json(tmp_path / "cand.json", candidates_from_labels(split.labels, ds.class_names))
    m = evaluate(auto_segmenter, ds, tmp_path / "e", candidates="auto", captions="auto",
                 published_candidates=published, progress=False, report_images=0)
    vocab = ds.class_names[1:]
    kept = tp = true = 0
    for i in split.ids:
        res = auto_segmenter(str(ds.image_path(i)), classes=list(vocab), caption="auto", candidates="auto",
                             threshold=ds.default_threshold)
        truth = true_classes(split.labels[i], ds.class_names)
        kept, tp, true = kept + len(res.candidates), tp + len(truth & set(res.candidates)), true + len(truth)
    rec = m["presence"]["front_end"]
    assert (rec["precision"], rec["recall"]) == (round(tp / kept, 4) if kept else None, round(tp / true, 4))
    assert m["presence"]["published"]["recall"] == 1.0 and m["presence"]["published"]["precision"] == 1.0
    assert [s["threshold"] for s in m["presence"]["sweep"]][:2] == [0.001, 0.002]
    assert m["presence"]["sweep"][-1]["recall"] <= m["presence"]["sweep"][0]["recall"]

    # the command: wiring, the printed table, nothing segmented at threshold 1
    rc = main(["eval", "--dataset", "voc", "--root", str(split.root), "--out", str(tmp_path / "c"),
               "--model", str(tiny_model_dir), "--device", "cpu", "--limit", "2", "--no-progress",
               "--report-images", "0", "--captions", "auto", "--candidates", "auto",
               "--captioner", str(frontend_dirs["blip"]), "--recognizer", str(frontend_dirs["clip"]),
               "--max-candidates", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "class presence" in out and "| front end |" in out
    run = json.loads((tmp_path / "c" / "run.json").read_text())
    assert run["candidates"] == "auto" and run["recognizer"] == str(frontend_dirs["clip"])
    # the thresholds actually used: CLIP's default, not null
    assert (run["candidate_threshold"], run["max_candidates"]) == (0.10, 1)
    metrics = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert (metrics["candidate_threshold"], metrics["max_candidates"], metrics["threshold"]) == \
        (0.10, 1, ds.default_threshold)
    assert sorted(p.name for p in (tmp_path / "c" / "masks").iterdir())[:2] == [f"{split.ids[0]}.json",
                                                                              f"{split.ids[0]}.png"]


@pytest.mark.parametrize("flags, msg", [
    (["--classes", "cat,cat", "--candidates", "auto"], "appears twice"),
    (["--classes", ",", "--candidates", "auto"], "empty"),
    (["--classes", "cat", "--caption", "auto", "--captioner", "{missing}"], "captioner"),
    (["--classes", "cat", "--candidates", "recognizer", "--recognizer", "{blip}"],
     "'blip' checkpoint; the recogniser supports"),
    (["--classes", "cat", "--candidates", "caption", "--captioner", "{missing}"], "captioner"),
    (["--classes", "cat", "--caption", "auto"],   # the default hub captioner, offline, not cached
     "captioner Salesforce/blip-image-captioning-large is not in the local Hugging Face cache"),
])
def test_bad_front_end_inputs_exit_2_with_one_line(frontend_dirs, photos, tmp_path, capsys,
                                                   monkeypatch, flags, msg):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    flags = [f.format(missing=tmp_path / "nowhere", blip=frontend_dirs["blip"]) for f in flags]
    rc = main(["segment", str(photos / "a.png"), "--model", str(tmp_path / "never-loaded"),
               "--out", str(tmp_path / "o"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", [["--candidate-threshold", "1.5"], ["--candidate-threshold", "x"],
                                  ["--max-candidates", "0"]])
@pytest.mark.parametrize("command", ["segment", "label", "eval"])
def test_bad_selection_flags_are_usage_errors(photos, tmp_path, capsys, flag, command):
    args = {"segment": ["segment", str(photos / "a.png"), "--classes", "cat"],
            "label": ["label", str(photos), "--classes", "cat", "--out", str(tmp_path / "o")],
            "eval": ["eval", "--dataset", "voc", "--root", str(tmp_path), "--out", str(tmp_path / "o")]}
    with pytest.raises(SystemExit) as e:
        main(args[command] + ["--candidates", "auto"] + flag)
    assert e.value.code == 2 and not (tmp_path / "o").exists()
    assert flag[0] in capsys.readouterr().err


@pytest.mark.parametrize("command", ["segment", "label", "eval"])
def test_candidates_modes_take_the_british_spelling_and_name_the_modes_on_a_typo(
        photos, tmp_path, capsys, command):
    from faseg_rt.cli.main import build_parser

    args = {"segment": ["segment", str(photos / "a.png"), "--classes", "cat"],
            "label": ["label", str(photos), "--classes", "cat", "--out", str(tmp_path / "o")],
            "eval": ["eval", "--dataset", "voc", "--root", str(tmp_path), "--out", str(tmp_path / "o")]}
    argv = args[command] + ["--candidates", "recogniser"]
    assert build_parser(argv).parse_args(argv).candidates == "recognizer"
    files = args[command] + ["--candidates", "cands.json"]  # a file name stays a file
    assert build_parser(files).parse_args(files).candidates == pathlib.Path("cands.json")
    with pytest.raises(SystemExit) as e:
        main(args[command] + ["--candidates", "atuo"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and not (tmp_path / "o").exists()
    assert "'atuo' is neither a mode ('auto', 'caption'" in err and "'recognizer'" in err
    assert err.endswith("did you mean 'auto'?") and "not found" not in err
