"""Per-image captions and candidate lists from files for `segment` and `label`, the lexicon
file, EXIF orientation, and every bad input of these (one line, exit 2, nothing written).

Masks of given candidates are checked on the 64 px model through the functions the commands
call; the 512 px CLI runs give every image an empty candidate list, so the SD model loads but
never runs and the wiring is checked cheaply.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from faseg_rt.cli import main
from faseg_rt.cli.segment import segment_files
from faseg_rt.errors import InvalidInputError
from faseg_rt.frontend.input_files import read_candidates, read_captions
from faseg_rt.testing import synthetic_image

VOCAB = ["cat", "dog", "potted plant", "sky", "red car"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_file_readers_key_by_name_or_stem_and_keep_the_order(photos, tmp_path):
    images = [str(photos / "a.png"), str(photos / "b.png")]
    caps = _write(tmp_path / "c.json", {"a.png": "a cat", "dir/b": ""})
    assert read_captions(caps, images) == ["a cat", None]
    cands = _write(tmp_path / "k.json", {"a": "sky potted plant", "b.png": ["Red car", "cat"]})
    assert read_candidates(cands, images, VOCAB) == [("sky", "potted plant"), ("red car", "cat")]


def test_candidates_files_take_devkit_spellings_and_suggest_on_a_typo(photos, tmp_path, capsys):
    """Eval reads "tvmonitor" / "diningtable" (the devkits' spellings): so do segment and label."""
    vocab = VOCAB + ["tv monitor", "dining table"]
    images = [str(photos / "a.png"), str(photos / "b.png")]
    cands = _write(tmp_path / "k.json", {"a": "tvmonitor pottedplant sky",
                                         "b": ["TV-Monitor", "diningtable", "red_car"]})
    assert read_candidates(cands, images, vocab) == [("tv monitor", "potted plant", "sky"),
                                                     ("tv monitor", "dining table", "red car")]
    typo = _write(tmp_path / "t.json", {"a": "cat dinning table", "b": ""})
    with pytest.raises(InvalidInputError, match="'dinning' .* did you mean 'dining table'"):
        read_candidates(typo, images, vocab)
    out = tmp_path / "o"
    rc = main(["segment", *images, "--classes", ",".join(vocab), "--model", str(tmp_path / "never"),
               "--out", str(out), "--candidates", str(typo)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].endswith("did you mean 'dining table'?"), err
    assert not out.exists()


def test_segment_files_use_the_files_per_image(small_segmenter, photos, tmp_path):
    images = [str(photos / "a.png"), str(photos / "b.png")]
    caption = {images[0]: "a sky over a dog", images[1]: None}
    candidates = {images[0]: ("sky", "dog"), images[1]: ("cat",)}
    assert segment_files(small_segmenter, images, VOCAB, tmp_path / "o", caption=caption,
                         candidates=candidates, progress=False) == []
    for path, stem in zip(images, "ab"):
        side = json.loads((tmp_path / "o" / f"{stem}.json").read_text())
        assert side["caption"] == caption[path] and side["candidates"] == list(candidates[path])
        assert side["sources"] == {c: ["given"] for c in candidates[path]}
        res = small_segmenter(path, classes=VOCAB, caption=caption[path],
                              candidates=list(candidates[path]))
        from faseg_rt.io import load_label_png

        np.testing.assert_array_equal(load_label_png(tmp_path / "o" / f"{stem}.png"), res.labels)


def test_segment_command_reads_the_files(tiny_model_dir, photos, tmp_path, capsys):
    caps = _write(tmp_path / "c.json", {"a.png": "a red car", "b": "two cats"})
    cands = _write(tmp_path / "k.json", {"a": "", "b": []})
    out = tmp_path / "out"
    rc = main(["segment", str(photos / "a.png"), str(photos / "b.png"), "--classes", ",".join(VOCAB),
               "--model", str(tiny_model_dir), "--out", str(out), "--quiet", "--device", "cpu",
               "--captions", str(caps), "--candidates", str(cands)])
    assert rc == 0, capsys.readouterr().err
    sides = {s: json.loads((out / f"{s}.json").read_text()) for s in "ab"}
    assert sides["a"]["caption"] == "a red car" and sides["b"]["caption"] == "two cats"
    assert sides["a"]["candidates"] == [] and sides["a"]["sources"] == {}


def _bad_files(tmp_path, photos):
    """(flags, message) of each bad per-image or lexicon input, written under tmp_path."""
    w = lambda name, obj: str(_write(tmp_path / name, obj))  # noqa: E731
    (tmp_path / "dir.json").mkdir(exist_ok=True)
    return [
        (["--captions", w("list.json", ["a cat"])], "must hold a JSON object"),
        (["--captions", w("num.json", {"a": 3})], "the value for 'a' is not a string"),
        (["--captions", w("miss.json", {"b": "x"})], "does not name image"),
        (["--captions", str(tmp_path / "nowhere.json")], "not found"),
        (["--candidates", w("zebra.json", {"a": "cat zebra"})], "'zebra' (for"),
        (["--candidates", w("extra.json", {"a": "cat", "c.png": "dog"})],
         "names 'c', which is not among the images"),
        (["--candidates", w("kmiss.json", {"b": "cat"})], "does not name image"),
        (["--candidates", "auto", "--lexicon", w("empty.json", "")], "is empty"),
        (["--candidates", "caption", "--caption", "x", "--lexicon", str(tmp_path / "dir.json")],
         "cannot be read"),
        (["--candidates", "caption", "--caption", "x", "--lexicon", w("bad.json", '{"cat": [1]}')],
         "entry 'cat' must be a list of words"),
    ]


@pytest.mark.parametrize("case", range(10))
@pytest.mark.parametrize("command", ["segment", "label"])
def test_bad_files_are_one_line_and_write_nothing(photos, tmp_path, capsys, case, command):
    flags, msg = _bad_files(tmp_path, photos)[case]
    out = tmp_path / "o"
    head = (["segment", str(photos / "a.png")] if command == "segment"
            else ["label", str(photos / "a.png"), "--ray-address", "local"])
    rc = main([*head, "--classes", ",".join(VOCAB), "--model", str(tmp_path / "never-loaded"),
               "--out", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not out.exists()


def test_caption_and_captions_are_exclusive(photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["segment", str(photos / "a.png"), "--classes", "cat", "--caption", "x",
              "--captions", str(tmp_path / "c.json")])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_label_worker_takes_per_image_inputs(tiny_model_dir, photos, tmp_path):
    """The Ray worker (run in-process) looks each image up by stem; one it lacks is an error row."""
    from faseg_rt.scale.label import _SegmentWorker
    from faseg_rt.scale.manifest import manifest_fields

    worker = _SegmentWorker(str(tiny_model_dir), str(tmp_path), VOCAB, {"a": "a sky"}, None,
                            device="cpu", candidates={"a": [], "b": []})
    a, b = str(photos / "a.png"), str(photos / "b.png")
    rows = worker({"bytes": [open(a, "rb").read(), open(b, "rb").read()], "path": [a, b]})
    assert list(rows["status"]) == ["ok", "error"]
    assert rows["error"][1] == f"the captions file does not name {b}"
    fields = manifest_fields({"frontend": rows["frontend"][0]})["frontend"]
    assert fields["caption"] == "a sky" and fields["candidates"] == [] and fields["sources"] == {}


@pytest.mark.slow  # starts Ray
def test_label_command_with_files_records_them(tiny_model_dir, photos, tmp_path, capsys):
    pytest.importorskip("ray", reason="ray is not installed: pip install 'faseg_rt[ray]'")
    caps = _write(tmp_path / "c.json", {"a.png": "a red car", "b": "two cats"})
    cands = _write(tmp_path / "k.json", {"a": "", "b": ""})
    out = tmp_path / "out"
    rc = main(["label", str(photos), "--classes", ",".join(VOCAB), "--model", str(tiny_model_dir),
               "--out", str(out), "--quiet", "--device", "cpu", "--ray-address", "local",
               "--captions", str(caps), "--candidates", str(cands)])
    assert rc == 0, capsys.readouterr().err
    rows = {r["input"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert rows[str(photos / "a.png")]["frontend"]["caption"] == "a red car"
    assert rows[str(photos / "b.png")]["frontend"]["caption"] == "two cats"
    assert all(r["status"] == "ok" and r["frontend"]["candidates"] == [] for r in rows.values())
    assert rows[str(photos / "a.png")]["caption"].startswith("sha256:")   # the file, by digest


def _sideways_jpeg(path, w=96, h=64):
    """A JPEG stored w x h whose EXIF orientation (6) says: display it turned, h x w."""
    image = synthetic_image(w, h, seed=7)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, format="JPEG", exif=exif)
    return path


def test_exif_transpose_turns_the_image_first(small_segmenter, tmp_path):
    path = _sideways_jpeg(tmp_path / "phone.jpg")
    stored = small_segmenter(path, classes=["sky", "cat"], caption="x")
    shown = small_segmenter(path, classes=["sky", "cat"], caption="x", exif_transpose=True)
    assert stored.labels.shape == (64, 96) and shown.labels.shape == (96, 64)
    with Image.open(path) as im:
        from PIL import ImageOps

        upright = ImageOps.exif_transpose(im).convert("RGB")
    np.testing.assert_array_equal(shown.labels, small_segmenter(upright, ["sky", "cat"], "x").labels)
    buf = io.BytesIO(path.read_bytes())
    assert segment_files(small_segmenter, [str(path)], ["sky", "cat"], tmp_path / "o", caption="x",
                         progress=False, exif_transpose=True) == []
    from faseg_rt.io import load_label_png

    assert load_label_png(tmp_path / "o" / "phone.png").shape == (96, 64) and buf.getvalue()


def test_segment_and_label_take_the_modes(tiny_model_dir, frontend_dirs, photos, tmp_path, capsys):
    """caption from `segment`, auto from the label worker: wiring and records (the caption names
    no class and the threshold is 1, so the SD model loads but never runs)."""
    from faseg_rt.scale.label import _SegmentWorker
    from faseg_rt.scale.manifest import manifest_fields

    out = tmp_path / "out"
    rc = main(["segment", str(photos / "a.png"), "--classes", ",".join(VOCAB), "--device", "cpu",
               "--model", str(tiny_model_dir), "--out", str(out), "--quiet",
               "--caption", "an empty room", "--candidates", "caption"])
    assert rc == 0, capsys.readouterr().err
    side = json.loads((out / "a.json").read_text())
    assert side["candidates"] == [] and side["sources"] == {} and side["captioner"] is None
    assert side["recognizer"] is None and "candidate_threshold" not in side
    worker = _SegmentWorker(str(tiny_model_dir), str(tmp_path), VOCAB, "an empty room", None,
                            device="cpu", candidates="auto",
                            frontend={"recognizer": frontend_dirs["siglip"], "candidate_threshold": 1.0})
    path = str(photos / "b.png")
    rows = worker({"bytes": [open(path, "rb").read()], "path": [path]})
    fields = manifest_fields({"frontend": rows["frontend"][0]})["frontend"]
    assert list(rows["status"]) == ["ok"] and fields["candidates"] == []
    assert fields["candidate_threshold"] == 1.0 and fields["recognizer"] == str(frontend_dirs["siglip"])


@pytest.mark.parametrize("mode", ["caption", "recognizer", "auto"])
def test_eval_modes_score_each_source(auto_segmenter, tmp_path, mode):
    from faseg_rt.eval.datasets.registry import open_dataset
    from faseg_rt.testing.datasets import make_voc
    from faseg_rt.eval.loop import evaluate

    split = make_voc(tmp_path / "VOC2012", n_images=2, size=(40, 56))
    ds = open_dataset("voc", split.root)
    captions = {split.ids[0]: "a cat on a sofa", split.ids[1]: "two people and a dog"}
    m = evaluate(auto_segmenter, ds, tmp_path / "e", candidates=mode, captions=captions,
                 progress=False, report_images=0)
    sides = [json.loads((tmp_path / "e" / "masks" / f"{i}.json").read_text()) for i in split.ids]
    named = [["cat", "sofa"], ["person", "dog"]]
    for side, names in zip(sides, named):
        recognised = sorted((c for c, s in side["sources"].items() if "recognizer" in s),
                            key=lambda c: -side["scores"][c])             # by decreasing score
        want = {"caption": names, "recognizer": recognised,
                "auto": list(dict.fromkeys(names + recognised))}[mode]
        assert side["candidates"] == want
    assert m["candidates"] == mode and m["presence"]["front_end"]["images"] == 2
    assert ("caption" in m["presence"]) == (mode != "recognizer")
    if mode == "caption":
        assert "candidate_threshold" not in m and m["presence"]["caption"]["mean_candidates"] == 2.0
    else:   # the threshold actually used is recorded, the sweep made from the stored scores
        assert (m["candidate_threshold"], m["max_candidates"]) == (0.3, 6) and "sweep" in m["presence"]


def test_the_lexicon_file_is_read_once_per_command(tmp_path, monkeypatch, capsys):
    """--lexicon is read in one place (cli.args.lexicon_arg): the front-end settings, the check
    and the run metadata all see the mapping read first, and stray keys warn once per check."""
    from argparse import Namespace

    from faseg_rt.cli.args import frontend_kwargs, lexicon_arg
    from faseg_rt.frontend import lexicon as lexicon_module

    path = tmp_path / "lex.json"
    path.write_text('{"dog": ["mutt"], "zebra": ["zeb"]}')
    reads, real = [], lexicon_module.load_lexicon
    monkeypatch.setattr(lexicon_module, "load_lexicon", lambda p: reads.append(p) or real(p))
    args = Namespace(lexicon=path)
    first = lexicon_arg(args, ["dog", "cat"])
    assert first == {"dog": ["mutt"], "zebra": ["zeb"]}
    assert "'zebra' match no class of the vocabulary" in capsys.readouterr().err
    path.write_text('{"cat": ["moggy"]}')  # changed mid-command: the command keeps what it read
    assert frontend_kwargs(args)["lexicon"] == lexicon_arg(args) == first
    assert reads == [path]
