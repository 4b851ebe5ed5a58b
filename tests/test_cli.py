"""The faseg-rt command: outputs, exit codes, one-line errors, no partial files."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from faseg_rt.cli.main import main
from faseg_rt.testing import synthetic_image

pytestmark = pytest.mark.slow  # real model loads, 512 px calls and a console-script subprocess


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    synthetic_image(96, 64, seed=1).save(d / "a.png")
    synthetic_image(40, 30, seed=2).save(d / "b.jpg")
    (d / "bad.jpg").write_text("not an image")
    return d


def test_segment_writes_masks_and_overlays(tiny_model_dir, images, tmp_path, capsys, fast_cases):
    out = tmp_path / "out"
    rc = main(["segment", str(images / "a.png"), str(images / "b.jpg"), "--classes",
               "cat, potted plant,aeroplane", "--caption", "a photo of a room", "--model",
               str(tiny_model_dir), "--out", str(out), "--overlay", "--quiet"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "a_overlay.png", "b.json", "b.png",
                                                     "b_overlay.png"]
    with Image.open(out / "a.png") as m:
        assert m.mode == "P" and m.size == (96, 64)
        assert np.array_equal(np.array(m), fast_cases[0]["fast"].labels)


def test_batch_continues_past_a_bad_image(tiny_model_dir, images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(images / "bad.jpg"), str(images / "b.jpg"), "--classes", "cat",
               "--model", str(tiny_model_dir), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "bad.jpg" in err and "1 of 2 image(s) failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["b.json", "b.png"]


def test_two_images_with_one_stem_are_refused_before_writing(tiny_model_dir, images, tmp_path, capsys):
    other = tmp_path / "elsewhere"
    other.mkdir()
    synthetic_image(20, 20, seed=3).save(other / "a.jpg")       # a.png and a.jpg -> both a.png
    out = tmp_path / "out"
    rc = main(["segment", str(images / "a.png"), str(other / "a.jpg"), "--classes", "cat",
               "--model", str(tiny_model_dir), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "would both write a.png" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("args, msg", [
    (["--classes", "cat,,dog"], "empty or whitespace"),
    (["--classes", "cat,Cat"], "appears twice"),
])
def test_bad_classes_exit_2_with_one_line(tiny_model_dir, images, tmp_path, capsys, args, msg):
    rc = main(["segment", str(images / "a.png"), "--model", str(tiny_model_dir),
               "--out", str(tmp_path / "o")] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0] and err[0].startswith("faseg-rt: error:")
    assert not (tmp_path / "o").exists()


def test_bad_model_and_threshold(tmp_path, images, capsys):
    rc = main(["segment", str(images / "a.png"), "--classes", "cat", "--model", str(tmp_path)])
    assert rc == 2 and "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["segment", str(images / "a.png"), "--classes", "cat", "--threshold", "2"])
    assert e.value.code == 2


def test_console_script_demo_runs_offline(tmp_path):
    """The README's demo command, as a user runs it (a fresh process, the installed script): the
    shipped trained toy model's masks match the picture's objects."""
    import re

    exe = [sys.executable, "-m", "faseg_rt.cli"]
    r = subprocess.run(exe + ["demo", "--out", str(tmp_path / "demo")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "toy-world model" in r.stderr                              # says which model it used
    wrote = r.stdout.splitlines()[0]
    for name in ("demo_image.png", "demo_image_mask.png", "demo_image_overlay.png"):  # all it writes
        assert str(tmp_path / "demo" / name) in wrote and (tmp_path / "demo" / name).is_file(), wrote
    with Image.open(tmp_path / "demo" / "demo_image_mask.png") as m:
        assert m.mode == "P" and m.size == (128, 128)
    ious = dict(re.findall(r"([a-z]+) ([0-9.]+)", wrote.split("masks:")[1]))
    # picture 9: a person and a tree on the sea under the sky; floor from the shipped model
    assert set(ious) == {"person", "tree", "water", "sky"}, wrote
    assert min(map(float, ious.values())) >= 0.3, wrote   # measured: person 0.55, tree 0.44, water 0.97, sky 0.68
