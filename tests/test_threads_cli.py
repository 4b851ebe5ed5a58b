"""--threads on segment, eval, label and serve reaches the thread policy (faseg_rt/threads.py);
segment's sidecars and eval's metrics record the threads used; the label worker and the serve
replica apply the policy once when they start."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from faseg_rt import threads
from faseg_rt.cli.main import build_parser, main
from faseg_rt.errors import InvalidInputError


def _parse(argv):
    return build_parser(argv).parse_args(argv)


@pytest.mark.parametrize("argv", [["segment", "x.png", "--classes", "cat"], ["label", "x", "--classes", "cat",
                                  "--out", "o"], ["eval", "--dataset", "voc", "--root", "r", "--out", "o"],
                                  ["serve"]])
def test_every_model_command_takes_threads_checked_by_the_rules(argv, capsys):
    assert _parse(argv + ["--threads", "3"]).num_threads == 3
    assert _parse(argv).num_threads is None
    for bad in ("0", "-1", "1.5", "two"):
        with pytest.raises(SystemExit) as e:
            _parse(argv + ["--threads", bad])
        assert e.value.code == 2
        assert "argument --threads" in capsys.readouterr().err


def test_serve_threads_and_num_threads_are_one_setting():
    assert _parse(["serve", "--num-threads", "2"]).num_threads == 2
    assert _parse(["serve", "--threads", "4"]).num_threads == 4


def test_segment_applies_threads_and_sidecars_record_them(tiny_model_dir, small_config_file, tmp_path,
                                                           keep_threads, monkeypatch):
    from faseg_rt.testing import synthetic_image

    synthetic_image(40, 30, seed=7).save(tmp_path / "photo.png")
    seen = []
    real = threads.apply
    monkeypatch.setattr(threads, "apply", lambda n=None: seen.append(n) or real(n))
    torch.set_num_threads(2)
    rc = main(["segment", str(tmp_path / "photo.png"), "--classes", "cat,sky", "--threads", "1",
               "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32",
               "--config", str(small_config_file), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 0 and seen == [1] and torch.get_num_threads() == 1
    side = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert side["threads"]["threads"] == 1 and side["threads"]["source"] == "explicit"
    assert set(side["threads"]) >= {"cpus_allowed", "quota", "ray_cpus", "reason", "wait_policy"}


def test_current_reports_a_count_set_outside_the_policy(keep_threads):
    threads.apply(1)
    assert threads.current()["source"] == "explicit"
    torch.set_num_threads(2)  # the caller's own setting after the policy's
    now = threads.current()
    assert (now["threads"], now["source"]) == (2, "caller")


def test_eval_metrics_record_the_threads(tmp_path, keep_threads):
    """evaluate() records the count it ran at, outside run.json (a resume may use another)."""
    from faseg_rt.eval.loop import evaluate
    from faseg_rt.eval import open_dataset
    from faseg_rt.testing.datasets import make_voc

    split = make_voc(tmp_path / "VOC2012", n_images=2)
    ds = open_dataset("voc", split.root)

    class Fake:  # every pixel background: no model needed
        def segment_batch(self, images, classes, **kw):
            import numpy as np
            from PIL import Image

            return [SimpleNamespace(labels=np.zeros(Image.open(p).size[::-1], np.uint8), selection=None)
                    for p in images]

    threads.apply(1)
    m = evaluate(Fake(), ds, tmp_path / "out", report_images=0, progress=False)
    assert (m["threads"]["threads"], m["threads"]["source"]) == (1, "explicit")
    assert "threads" not in json.loads((tmp_path / "out" / "run.json").read_text())


def test_label_passes_threads_to_the_library(monkeypatch, tmp_path):
    import faseg_rt.scale.label as scale_label

    (tmp_path / "a.png").write_bytes(b"")
    got = {}

    def fake_label(inputs, classes, out, **kw):
        got.update(kw)
        return SimpleNamespace(ok=1, failed=0, skipped=0, seconds=0.0, manifest="m", first_error=None)

    monkeypatch.setattr(scale_label, "label", fake_label)
    rc = main(["label", str(tmp_path / "a.png"), "--classes", "cat", "--out", str(tmp_path / "o"),
               "--threads", "2", "--device", "cpu", "--quiet"])
    assert rc == 0 and got["threads"] == 2


def test_label_refuses_a_bad_thread_count_before_ray_starts(tmp_path):
    from faseg_rt.scale.label import label

    with pytest.raises(InvalidInputError, match="threads must be an integer >= 1"):
        label([str(tmp_path / "a.png")], ["cat"], tmp_path / "o", model="m", threads=0)


def test_the_label_worker_applies_the_policy_at_start(monkeypatch):
    """One call when the actor starts: its explicit count, else None (then its Ray CPUs)."""
    import faseg_rt.segmenter
    from faseg_rt.scale.worker import _SegmentWorker

    seen = []
    monkeypatch.setattr(threads, "apply", lambda n=None: seen.append(n))
    monkeypatch.setattr(faseg_rt.segmenter.Segmenter, "from_pretrained", classmethod(lambda cls, *a, **k: "seg"))
    _SegmentWorker("m", "out", ["cat"], None, None, num_threads=None)
    _SegmentWorker("m", "out", ["cat"], None, None, num_threads=2)
    assert seen == [None, 2]


def test_the_serve_replica_applies_the_policy(monkeypatch):
    pytest.importorskip("ray.serve")
    from faseg_rt.serve.app import FASegService  # a Serve Deployment around the class

    seen = []
    monkeypatch.setattr(threads, "apply", lambda n=None: seen.append(n))
    for n in (None, 3):
        FASegService.func_or_class._set_threads(SimpleNamespace(settings=SimpleNamespace(num_threads=n)))
    assert seen == [None, 3]
