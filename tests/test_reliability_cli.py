"""CLI: exit codes (0 ok, 1 internal / I/O error, 2 bad usage or input), one-line
messages on stderr, no partial output file, a batch that goes on past bad images.

Runs `faseg_rt.cli.main` in-process.  The model loader is replaced by the session
`small_segmenter` (tiny model, 8 x 8 latents), so no test here loads a model or runs a 512 px
pass; tests/test_cli.py covers the real loading path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from faseg_rt.cli import segment as cli  # where `segment` looks up load_segmenter
from faseg_rt.cli.main import main
from faseg_rt.testing import synthetic_image


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    synthetic_image(40, 30, seed=31).save(d / "a.png")
    synthetic_image(20, 24, seed=32).save(d / "c.png")
    (d / "text.jpg").write_text("not an image")
    (d / "empty.png").write_bytes(b"")
    return d


@pytest.fixture
def small_cli(small_segmenter, monkeypatch):
    """The CLI with the small segmenter instead of a model load; 1 intra-op thread."""
    calls = []

    def load(args):
        calls.append(args.model)
        return small_segmenter

    monkeypatch.setattr(cli, "load_segmenter", load)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield calls
    torch.set_num_threads(before)


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_batch_goes_on_past_bad_images_and_exits_2(small_cli, images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(images / "text.jpg"), str(images / "a.png"), str(images / "empty.png"),
               str(images / "c.png"), str(images / "missing.png"), "--classes", "cat,dog",
               "--out", str(out), "--quiet", "--batch-size", "2"])
    err = stderr_lines(capsys)
    assert rc == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "c.json", "c.png"]  # no temp files
    failed = [line for line in err if line.startswith("faseg-rt: failed:")]
    assert len(failed) == 3 and all(len(line) < 400 for line in failed)
    assert any("text.jpg" in x for x in failed) and any("0-byte" in x for x in failed)
    assert any("missing.png" in x and "does not exist" in x for x in failed)
    assert err[-1] == "faseg-rt: 3 of 5 image(s) failed"
    with Image.open(out / "c.png") as m:
        assert m.size == (20, 24)


def test_success_exits_0(small_cli, images, tmp_path, capsys):
    rc = main(["segment", str(images / "a.png"), "--classes", "cat", "--out", str(tmp_path / "o"),
               "--quiet"])
    assert rc == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.json", "a.png"]


@pytest.mark.parametrize("argv", [
    [],                                                  # no subcommand
    ["segment", "x.png"],                                # --classes missing
    ["segment", "x.png", "--classes", "cat", "--batch-size", "0"],
    ["segment", "x.png", "--classes", "cat", "--batch-size", "two"],
    ["segment", "x.png", "--classes", "cat", "--threshold", "nan"],
    ["frobnicate"],
])
def test_usage_errors_exit_2_before_loading_a_model(small_cli, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip()
    assert small_cli == []                               # refused before any model load


def test_out_is_a_file_exits_2_with_one_line(small_cli, images, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc = main(["segment", str(images / "a.png"), "--classes", "cat", "--out", str(f)])
    err = stderr_lines(capsys)
    assert rc == 2 and len(err) == 1 and "is a file" in err[0] and small_cli == []
    assert f.read_text() == "x"


def test_internal_error_exits_1_with_one_line_and_a_debug_hint(monkeypatch, images, tmp_path, capsys):
    def boom(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(cli, "load_segmenter", boom)
    monkeypatch.delenv("FASEG_DEBUG", raising=False)
    argv = ["segment", str(images / "a.png"), "--classes", "cat", "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    err = stderr_lines(capsys)
    assert len(err) == 1 and err[0].startswith("faseg-rt: internal error: RuntimeError: something unexpected")
    assert "FASEG_DEBUG=1" in err[0]
    monkeypatch.setenv("FASEG_DEBUG", "1")
    assert main(argv) == 1
    assert "Traceback" in capsys.readouterr().err


def test_crash_while_writing_a_mask_leaves_no_partial_file(small_cli, images, tmp_path, capsys,
                                                           monkeypatch):
    """The PNG encoder writes half a file and then the disk 'fills up' on the second image:
    exit 1, one line, the first mask complete, no file of the second, no temporary file."""
    real_save = Image.Image.save
    saved = []

    def flaky_save(self, fp, format=None, **params):
        saved.append(fp)
        if len(saved) == 2:
            with open(fp, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n half a file")
            raise OSError(28, "No space left on device")
        return real_save(self, fp, format=format, **params)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    out = tmp_path / "out"
    rc = main(["segment", str(images / "a.png"), str(images / "c.png"), "--classes", "cat",
               "--out", str(out), "--quiet"])
    err = stderr_lines(capsys)
    assert rc == 1
    assert len(err) == 1 and "No space left on device" in err[0] and err[0].startswith("faseg-rt: error:")
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png"]
    monkeypatch.setattr(Image.Image, "save", real_save)
    with Image.open(out / "a.png") as m:
        assert m.mode == "P" and m.size == (40, 30)
        assert np.array(m).shape == (30, 40)
