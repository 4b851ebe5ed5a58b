"""CLI: exit codes (0 ok, 1 internal / I/O error, 2 bad usage or input), one-line
messages on stderr, no partial output file, a batch that goes on past bad images.

Runs `faseg_rt.cli.main` in-process.  The model loader is replaced by the session
`small_segmenter` (tiny model, 8 x 8 latents), so no test here loads a model or runs a 512 px
pass; tests/test_cli.py covers the real loading path.
"""

from __future__ import annotations

import os
from pathlib import Path

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
    """The CLI with the small segmenter instead of a model load; 1 intra-op thread (also the
    thread policy's choice inside the command: it reads OMP_NUM_THREADS)."""
    calls = []
    monkeypatch.setenv("OMP_NUM_THREADS", "1")

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
               str(images / "c.png"), "--classes", "cat,dog",
               "--out", str(out), "--quiet", "--batch-size", "2"])
    err = stderr_lines(capsys)
    assert rc == 2
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "c.json", "c.png"]  # no temp files
    failed = [line for line in err if line.startswith("faseg-rt: failed:")]
    assert len(failed) == 2 and all(len(line) < 400 for line in failed)
    assert any("text.jpg" in x for x in failed) and any("0-byte" in x for x in failed)
    assert err[-1] == "faseg-rt: 2 of 4 image(s) failed"
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
    """The second image's mask is half on disk when the disk 'fills up': exit 1, one line, the
    first mask complete, no file of the second, no temporary file.  Masks are encoded in memory
    (io.label_png_bytes) and written as bytes, so the fault is injected in that write."""
    real_write_bytes = Path.write_bytes

    def flaky_write_bytes(self, data):
        if self.name.startswith(".c.png."):  # atomic_path's temporary of the second mask
            real_write_bytes(self, data[:len(data) // 2])
            raise OSError(28, "No space left on device")
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", flaky_write_bytes)
    out = tmp_path / "out"
    rc = main(["segment", str(images / "a.png"), str(images / "c.png"), "--classes", "cat",
               "--out", str(out), "--quiet"])
    err = stderr_lines(capsys)
    assert rc == 1
    assert len(err) == 1 and "No space left on device" in err[0] and err[0].startswith("faseg-rt: error:")
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png"]
    with Image.open(out / "a.png") as m:
        assert m.mode == "P" and m.size == (40, 30)
        assert np.array(m).shape == (30, 40)


# ------------------------------------------------- mistakes refused before any model loads
@pytest.mark.parametrize("make, msg", [
    (lambda d, t: [str(d / "a.png"), str(d / "missing.png")], "image {d}/missing.png does not exist"),
    (lambda d, t: [str(t / "none")], "no images in folder {t}/none"),
])
def test_missing_inputs_exit_2_in_one_line_before_the_model(small_cli, images, tmp_path, capsys, make, msg):
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("x")
    out = tmp_path / "out"
    rc = main(["segment", *make(images, tmp_path), "--classes", "cat", "--out", str(out)])
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and msg.format(d=images, t=tmp_path) in err[0]
    assert small_cli == [] and not out.exists() and "wrote" not in captured.out


@pytest.mark.parametrize("out, msg", [("file/sub", "is a file"), ("locked/o", "no permission")])
def test_unusable_out_exits_2_before_the_model(small_cli, images, tmp_path, capsys, out, msg):
    (tmp_path / "file").write_text("x")
    (tmp_path / "locked").mkdir(mode=0o500)
    if msg == "no permission" and os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("running as a user who may write anywhere (root): permissions cannot be tested")
    rc = main(["segment", str(images / "a.png"), "--classes", "cat", "--out", str(tmp_path / out)])
    err = stderr_lines(capsys)
    assert rc == 2 and len(err) == 1 and msg in err[0] and small_cli == []


def test_segment_takes_a_folder_and_reports_what_it_wrote_on_stdout(small_cli, images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["segment", str(images), "--classes", "cat", "--out", str(out), "--quiet",
               "--threshold", "1"])
    captured = capsys.readouterr()
    assert rc == 2                                   # text.jpg and empty.png are not images
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.png", "c.json", "c.png"]
    lines = captured.out.splitlines()
    assert lines[0] == f"wrote 2 mask(s) (and .json) to {out}"
    # threshold 1: nothing is above it, and the summary says so, naming the threshold
    assert lines[1] == "2 of 2 mask(s) all background (no class above the threshold 1): a.png, c.png"
    assert "faseg-rt: 2 of 4 image(s) failed" in captured.err


def test_nothing_written_says_no_wrote_line(small_cli, images, tmp_path, capsys):
    rc = main(["segment", str(images / "text.jpg"), "--classes", "cat", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert rc == 2 and "wrote" not in captured.out + captured.err


def test_empty_reason_names_the_threshold_that_emptied_the_mask():
    from faseg_rt.results import SegmentationResult

    base = dict(labels=np.zeros((4, 6), np.int32), scores=None, classes=("cat", "dog"), threshold=0.55)
    assert SegmentationResult(**base).empty_reason() == "no class above the threshold 0.55"
    kept_none = SegmentationResult(**base, candidates=(),
                                   selection={"candidate_threshold": 0.05, "max_candidates": 6})
    assert kept_none.empty_reason() == "no class scored >= 0.05 by the recogniser"
    assert kept_none.sidecar()["candidate_threshold"] == 0.05
    assert SegmentationResult(**base, candidates=()).empty_reason() == "no candidate class given"
    ov = kept_none.overlay()
    assert ov.width > 6 * 7 and ov.height > 4       # the legend's line fits, under the image


@pytest.mark.parametrize("flags, msg", [
    (["--device", "cuda:99"], "device 'cuda:99' does not exist"),   # on no machine: 99 GPUs
    (["--device", "cpu", "--dtype", "fp16"], "float16 on the CPU"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
@pytest.mark.parametrize("command", ["segment", "label"])
def test_device_and_dtype_are_refused_before_the_model(small_cli, images, tmp_path, capsys, flags, msg,
                                                       command):
    if command == "label":
        pytest.importorskip("ray", reason="label needs faseg_rt[ray]")
    if "cuda:99" in flags and not torch.cuda.is_available():
        msg = "device 'cuda:99' needs a CUDA GPU"
    out = tmp_path / "o"
    rc = main([command, str(images / "a.png"), "--classes", "cat", "--out", str(out), *flags])
    err = stderr_lines(capsys)
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert small_cli == [] and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: 'cuda' is valid here")
def test_cuda_without_a_gpu_is_one_line_not_a_driver_error(small_cli, images, tmp_path, capsys):
    rc = main(["segment", str(images / "a.png"), "--classes", "cat", "--device", "cuda"])
    err = stderr_lines(capsys)
    assert rc == 2 and len(err) == 1 and "needs a CUDA GPU" in err[0] and small_cli == []


@pytest.mark.parametrize("command", ["segment", "label", "serve"])
def test_an_exported_backend_without_engines_names_the_flag(small_cli, images, tmp_path, capsys,
                                                            command):
    """The library says engines=DIR (its keyword); the command line says --engines DIR."""
    out = tmp_path / "o"
    head = ([] if command == "serve"
            else [str(images / "a.png"), "--classes", "cat", "--out", str(out)])
    rc = main([command, *head, "--backend", "onnxruntime"])
    err = stderr_lines(capsys)
    assert rc == 2 and len(err) == 1, err
    assert "--backend onnxruntime runs exported graphs: pass --engines DIR" in err[0]
    assert "engines=" not in err[0] and small_cli == [] and not out.exists()
