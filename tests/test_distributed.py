"""faseg-rt label / faseg_rt.scale: Ray Data scale-out on the tiny model.

One local Ray instance (num_cpus=2) and ONE labelling run over a dozen generated images (11 good,
1 corrupt) are shared by the module: the tests check that its masks are byte-identical to the
single-process `faseg-rt segment`, that the corrupt image is an error row, and that a rerun skips
everything (the slow tier).  The cheap input / manifest / missing-Ray checks need no Ray
instance and run in the fast tier.
"""

from __future__ import annotations

import io
import json
import os
import sys

import pytest

from faseg_rt.cli.main import main
from faseg_rt.errors import InvalidInputError
from faseg_rt.io import check_collisions, output_name
from faseg_rt.scale.inputs import resolve_inputs
from faseg_rt.scale.label import RAY_MISSING, RayUnavailableError, label
from faseg_rt.scale.manifest import Manifest
from faseg_rt.testing import synthetic_image, write_synthetic_images

try:
    import ray
    import ray.data  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False

needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray is not installed: pip install 'faseg_rt[ray]'")
CLASSES = ["cat", "potted plant", "sky"]
N_GOOD = 11


# ------------------------------------------------------------------ no Ray needed
def test_without_ray_the_command_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    synthetic_image(24, 20).save(tmp_path / "a.png")  # valid arguments: they are checked first
    rc = main(["label", str(tmp_path), "--classes", "cat", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and RAY_MISSING in err[0]
    assert not (tmp_path / "o").exists()
    with pytest.raises(RayUnavailableError, match="pip install"):
        label([str(tmp_path / "a.png")], ["cat"], tmp_path / "o", model="m")


_TALK = """
import logging, os, sys
from faseg_rt.cli.label import ray_terminal_to_log
log = logging.getLogger("ray.fake")
log.addHandler(logging.StreamHandler())  # as Ray's handler: it holds sys.stderr as it was
log.propagate = False
with ray_terminal_to_log(quiet=%r, verbose=%r):
    os.write(2, b"core_worker.cc: max_restarts > 0\\n")  # Ray's C++ core: straight to fd 2
    print("progress", file=sys.stderr)
    log.warning("a Ray warning")
print("after", file=sys.stderr)
"""


@pytest.mark.parametrize("quiet, verbose, shown", [
    (False, False, ["progress", "a Ray warning", "after"]),           # default: no core notices
    (True, False, ["after"]),                                          # --quiet: the summary only
    (False, True, ["core_worker.cc: max_restarts > 0", "progress", "a Ray warning", "after"]),
])
def test_label_keeps_ray_core_lines_for_verbose(quiet, verbose, shown):
    """What Ray's core writes to file descriptor 2 reaches the terminal only with --verbose;
    this command's stderr and Ray's Python warnings do unless --quiet; the log is removed."""
    import glob
    import subprocess
    import tempfile

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "faseg-rt-label-*.log")))
    p = subprocess.run([sys.executable, "-c", _TALK % (quiet, verbose)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stderr.splitlines() == shown, p.stderr
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "faseg-rt-label-*.log"))) <= before


def test_inputs_from_directory_glob_and_list_file(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "sub/c.png"):
        synthetic_image(24, 24).save(d / name)
    (d / "notes.txt").write_text("not an image")
    assert resolve_inputs(d) == [str(d / "a.jpg"), str(d / "b.png")]  # not recursive, images only
    assert resolve_inputs(str(d / "**" / "*.png")) == [str(d / "b.png"), str(d / "sub" / "c.png")]
    lst = d / "list.txt"
    lst.write_text("# my images\nsub/c.png\n\ns3://bucket/x/y.jpg\nsub/c.png\n")
    assert resolve_inputs(lst) == [str(d / "sub" / "c.png"), "s3://bucket/x/y.jpg"]
    assert output_name("s3://bucket/x/y.jpg") == "y.png"
    with pytest.raises(InvalidInputError, match="does not exist"):
        resolve_inputs(tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="no images found"):
        resolve_inputs(str(tmp_path / "*.gif"))
    with pytest.raises(InvalidInputError, match="both write c.png"):
        check_collisions([str(d / "sub" / "c.png"), str(tmp_path / "c.jpg")])


def test_manifest_ignores_a_torn_line_and_compacts(tmp_path):
    path = tmp_path / "manifest.jsonl"
    rows = [{"input": "/a.png", "status": "error"}, {"input": "/a.png", "status": "ok"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"input": "/b.pn')
    m = Manifest(path).load()
    assert m.rows == {"/a.png": rows[1]}  # the latest row wins, the torn line is dropped
    m.compact()
    assert [json.loads(x) for x in path.read_text().splitlines()] == [rows[1]]
    assert not list(tmp_path.glob(".*.tmp"))


def _finished(out, inputs, **settings):
    """OUT as a finished run leaves it: a mask and an "ok" row per input, made with `settings`."""
    from faseg_rt.scale.manifest import job_settings

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in inputs:
        (out / output_name(item)).write_bytes(b"mask")
        rows.append(dict(job_settings(**settings), input=item, output=output_name(item),
                         status="ok", error=None, frontend={"caption": None}))
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return (out / "manifest.jsonl").read_text()


def test_settings_check_finds_masks_made_otherwise(tmp_path):
    """The check `label` runs before Ray starts: it reads the manifest, writes nothing."""
    from faseg_rt.scale.manifest import SettingsConflictError, check_settings, job_settings

    out, inputs = tmp_path / "o", ["/in/a.png", "/in/b.png"]
    old = dict(classes=["cat", "dog"], caption=None, threshold=None, model="m")
    before = _finished(out, inputs, **old)
    check_settings(out, job_settings(**old))                                  # same job: resumes
    check_settings(tmp_path / "empty", job_settings(**old))                   # nothing there yet
    new = job_settings(**dict(old, classes=["cat", "sky"], threshold=0.4))
    check_settings(out, new, outputs={"c.png"})                               # replaces nothing
    with pytest.raises(SettingsConflictError) as e:
        check_settings(out, new, outputs={"a.png", "c.png"})
    assert e.value.count == 1 and set(e.value.diff) == {"classes", "threshold"}
    message = str(e.value)
    assert "holds 1 mask(s) this run would replace" in message and "overwrite=True" in message
    assert "classes: ['cat', 'dog'] there, ['cat', 'sky'] now" in message and "\n" not in message
    with pytest.raises(SettingsConflictError, match="2 mask"):
        check_settings(out, new)
    (out / "b.png").unlink()                                 # a lost mask is redone, not replaced
    with pytest.raises(SettingsConflictError, match="1 mask"):
        check_settings(out, new)
    assert (out / "manifest.jsonl").read_text() == before and not (tmp_path / "empty").exists()


@needs_ray
@pytest.mark.parametrize("flags, named", [(["--classes", "cat,sky"], "classes: ['cat', 'dog'] there"),
                                          (["--classes", "cat,dog", "--threshold", "0.3"], "threshold"),
                                          (["--classes", "cat,dog", "--caption", "a cat"], "caption")])
def test_label_refuses_to_overwrite_masks_made_otherwise(photos, tmp_path, capsys, flags, named):
    out = tmp_path / "o"
    images = [str(photos / "a.png"), str(photos / "b.png")]
    before = _finished(out, images, classes=["cat", "dog"], caption=None, threshold=None, model="m")
    rc = main(["label", *images, "--model", "m", "--out", str(out), "--ray-address", "local", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and named in err[0], err
    assert "holds 2 mask(s)" in err[0] and "pass --overwrite" in err[0] and "overwrite=True" not in err[0]
    assert (out / "manifest.jsonl").read_text() == before and not ray.is_initialized()


def test_label_takes_several_inputs(photos, tmp_path, monkeypatch, capsys):
    """`faseg-rt label a.png dir/ 'x/*.png' list.txt`: each resolved as one input is."""
    import faseg_rt.scale.label as scale_label
    from faseg_rt.scale.label import LabelReport

    monkeypatch.setitem(sys.modules, "ray", sys.modules.get("ray") or type(sys)("ray"))
    monkeypatch.setitem(sys.modules, "ray.data", sys.modules.get("ray.data") or type(sys)("ray.data"))
    seen = []

    def fake_label(inputs, classes, out, **kw):
        seen.append(inputs)
        return LabelReport(len(inputs), 0, 0, tmp_path / "manifest.jsonl", out, 0.0)

    monkeypatch.setattr(scale_label, "label", fake_label)
    d = tmp_path / "more"
    d.mkdir()
    for name in ("c.png", "d.jpg"):
        synthetic_image(24, 20).save(d / name)
    lst = tmp_path / "list.txt"
    lst.write_text(str(d / "c.png") + "\n")
    rc = main(["label", str(photos / "a.png"), str(d), str(photos / "*.png"), str(lst),
               "--classes", "cat", "--out", str(tmp_path / "o"), "--ray-address", "auto"])
    assert rc == 0, capsys.readouterr().err
    assert seen == [[str(photos / "a.png"), str(d / "c.png"), str(d / "d.jpg"), str(photos / "b.png")]]
    rc = main(["label", str(photos / "a.png"), str(tmp_path / "nope.png"), "--classes", "cat",
               "--out", str(tmp_path / "o"), "--ray-address", "auto"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nope.png does not exist" in err[0] and len(seen) == 1


def test_a_cpu_worker_never_asks_for_more_cpus_than_one_node_has():
    # two 1-CPU `ray start` nodes: 2 CPUs in all, but a worker asking for 2 fits on no node
    from faseg_rt.scale.label import _plan_resources

    class FakeRay:
        def __init__(self, per_node):
            self.per_node = per_node

        def cluster_resources(self):
            return {"CPU": float(sum(self.per_node))}

        def nodes(self):
            return [{"Alive": True, "Resources": {"CPU": float(c)}} for c in self.per_node] + \
                   [{"Alive": False, "Resources": {"CPU": 64.0}}]  # a dead node counts for nothing

    assert _plan_resources(FakeRay([1, 1]), 1, "cpu") == (1, 1.0, 0.0)
    assert _plan_resources(FakeRay([1, 1]), 2, "cpu") == (2, 1.0, 0.0)
    assert _plan_resources(FakeRay([4]), 2, "cpu") == (2, 2.0, 0.0)
    assert _plan_resources(FakeRay([2, 8]), 1, None) == (1, 8.0, 0.0)
    assert _plan_resources(FakeRay([1]), 2, "cpu") == (2, 0.5, 0.0)


def test_classes_file_errors(tmp_path, capsys):
    bad = tmp_path / "classes.json"
    bad.write_text('{"cat": 1}')
    from faseg_rt.cli.label import read_classes_file

    with pytest.raises(InvalidInputError, match="JSON list of names"):
        read_classes_file(str(bad))
    bad.write_text('["cat", "dog"]')
    assert read_classes_file(str(bad)) == ["cat", "dog"]


def test_load_image_names_the_file_of_bad_bytes():
    from faseg_rt.images import load_image

    buf = io.BytesIO(b"\x89PNG garbage")
    buf.name = "/data/x.png"
    with pytest.raises(InvalidInputError, match="/data/x.png is not an image"):
        load_image(buf)
    good = io.BytesIO()
    synthetic_image(30, 20).save(good, format="PNG")
    assert load_image(good.getvalue()).size == (30, 20)


# ------------------------------------------------------------------ one Ray run, shared
@pytest.fixture(scope="module")
def ray_local():
    if not HAVE_RAY:
        pytest.skip("ray is not installed: pip install 'faseg_rt[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def labelled(ray_local, tiny_model_dir, tmp_path_factory):
    """A dozen images (11 good of varied sizes, 1 corrupt) labelled by 2 Ray workers."""
    d = tmp_path_factory.mktemp("label_in")
    good = write_synthetic_images(d, N_GOOD, seed=100, width=40, height=30)
    png = io.BytesIO()
    synthetic_image(64, 48, seed=7).save(png, format="PNG")
    (d / "broken.png").write_bytes(png.getvalue()[:120])  # a truncated PNG
    out = tmp_path_factory.mktemp("label_out")
    report = label(d, CLASSES, out, model=tiny_model_dir, num_workers=2, batch_size=1,
                   caption="a photo")
    return dict(dir=d, good=good, out=out, report=report)


def _rows(out):
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


@needs_ray
@pytest.mark.slow  # one shared Ray run
def test_masks_are_byte_identical_to_the_single_process_cli(labelled, tiny_model_dir, tmp_path):
    # Each of the 2 workers owns 1 of the 2 CPUs, so torch runs 1 thread there; the CPU kernels'
    # reduction order depends on the thread count (a near-tie pixel can flip), so the reference
    # CLI run uses 1 thread too (--threads: the command sets its own count): same bytes.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = tmp_path / "cli"
        rc = main(["segment", *map(str, labelled["good"]), "--classes", ",".join(CLASSES),
                   "--caption", "a photo", "--model", str(tiny_model_dir), "--out", str(ref), "--quiet",
                   "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    for p in labelled["good"]:
        name = p.stem + ".png"
        assert (labelled["out"] / name).read_bytes() == (ref / name).read_bytes(), name


@needs_ray
@pytest.mark.slow  # one shared Ray run
def test_a_bad_image_is_an_error_row_and_the_job_completes(labelled):
    rep, out = labelled["report"], labelled["out"]
    assert (rep.ok, rep.failed, rep.skipped) == (N_GOOD, 1, 0)
    rows = {r["input"]: r for r in _rows(out)}
    assert len(rows) == N_GOOD + 1
    bad = rows[str(labelled["dir"] / "broken.png")]
    assert bad["status"] == "error" and "broken.png" in bad["error"] and "corrupt" in bad["error"]
    assert not (out / "broken.png").exists()
    for p in labelled["good"]:
        r = rows[str(p)]
        assert r["status"] == "ok" and r["error"] is None and r["classes"] == CLASSES
        assert (out / r["output"]).is_file() and r["output"] == p.stem + ".png"
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind


@needs_ray
@pytest.mark.slow  # one shared Ray run
def test_rerun_skips_finished_work(labelled, tiny_model_dir, tmp_path, capsys):
    out = labelled["out"]
    mtimes = {p: (out / (p.stem + ".png")).stat().st_mtime_ns for p in labelled["good"]}
    lst = tmp_path / "todo.txt"  # the CLI with a list file of the good images
    lst.write_text("".join(f"{p}\n" for p in labelled["good"]))
    rc = main(["label", str(lst), "--classes", ",".join(CLASSES), "--caption", "a photo",
               "--model", str(tiny_model_dir), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0 and f"0 image(s), 0 failed, {N_GOOD} skipped" in captured.out    # the summary
    assert captured.err == ""                                                      # --quiet
    assert {p: (out / (p.stem + ".png")).stat().st_mtime_ns for p in labelled["good"]} == mtimes
    assert len(_rows(out)) == N_GOOD + 1  # nothing appended
    # a row made with other classes (another mask) is not "done" for this job
    from faseg_rt.scale.manifest import is_done as _is_done
    from faseg_rt.scale.manifest import job_settings as _job_settings

    row = next(r for r in _rows(out) if r["status"] == "ok")
    same = _job_settings(row["classes"], row["caption"], row["threshold"], row["model"])
    assert _is_done(row, same, out)
    assert not _is_done(row, dict(same, classes=["dog"]), out)
