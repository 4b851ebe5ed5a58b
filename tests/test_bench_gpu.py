"""`faseg-rt bench gpu --dry`: the GPU plan runs end to end on the CPU (what needs CUDA is
skipped by the preflight with its reason), so it cannot rot between runs on a GPU;
and the budget, the step split and the incremental writing behave as documented."""

from __future__ import annotations

import json
import subprocess
from argparse import Namespace

import pytest
import torch

from faseg_rt.bench import gpu, gpu_plan, gpu_steps
from faseg_rt.bench.gpu_plan import preflight, run_key, select
from faseg_rt.bench.gpu_steps import Record
from faseg_rt.cli import main


def _cache(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny-sd15-random").symlink_to(tiny_model_dir)  # the session's tiny model, not a rebuild
    return cache


@pytest.mark.slow
def test_bench_gpu_dry_run(tiny_model_dir, tmp_path):
    cache, out = _cache(tmp_path, tiny_model_dir), tmp_path / "gpu"
    rc = main(["bench", "gpu", "--dry", "--in-process", "--out", str(out), "--cache", str(cache)])
    summary = json.loads((out / "summary.json").read_text())
    steps = {n: s["status"] for n, s in summary["steps"].items()}
    assert rc == 0, summary["steps"]
    assert steps == {"env": "ok", "parity-fp16-tiny": "ok", "eager-b1-tiny": "ok", "eager-b8-tiny": "ok",
                     "graphs-b1-tiny": "skipped", "graphs-b8-tiny": "skipped", "compiled-b1-tiny": "skipped",
                     "tensorrt-b1-tiny": "skipped", "onnxruntime-b1-tiny": "skipped"}
    assert "needs cuda" in summary["steps"]["graphs-b1-tiny"]["reason"]
    assert summary["preflight"]["checks"]["cuda"].startswith("missing")
    b8 = json.loads((out / "eager-b8-tiny.json").read_text())["result"]
    assert b8["latency_ms"]["median"] > 0 and b8["images_per_s"] > 0
    assert len(list((out / "ref").glob("eager-tiny-float32-*.npz"))) == 1  # what graphs / compiled compare with
    md = (out / "summary.md").read_text()
    rows = [ln.split("|")[1].strip() for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert rows == [s.name for s in select("default", dry=True)]  # the run order
    # a second run into the same OUT keeps what is done and runs nothing again
    rc = main(["bench", "gpu", "--dry", "--in-process", "--out", str(out), "--cache", str(cache),
               "--steps", "env,eager-b1-tiny"])
    again = json.loads((out / "summary.json").read_text())["steps"]
    assert rc == 0 and all(s.get("kept") for s in again.values()), again


def test_budget_stops_starting_steps_that_would_not_fit(tiny_model_dir, tmp_path):
    cache, out = _cache(tmp_path, tiny_model_dir), tmp_path / "gpu"
    # env's estimate (20 s) fits in 25 s; then every other step's estimate exceeds what is left
    rc = main(["bench", "gpu", "--dry", "--in-process", "--out", str(out), "--cache", str(cache),
               "--budget", "25", "--steps", "env,parity-fp16-tiny,eager-b1-tiny,graphs-b1-tiny"])
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert rc == 0
    assert {n: s["status"] for n, s in steps.items()} == {
        "env": "ok", "parity-fp16-tiny": "not started", "eager-b1-tiny": "not started", "graphs-b1-tiny": "skipped"}
    assert "--budget" in steps["eager-b1-tiny"]["reason"]
    assert json.loads((out / "eager-b1-tiny.json").read_text())["status"] == "not started"
    assert "| parity-fp16-tiny | not started |" in (out / "summary.md").read_text()


def test_killed_step_keeps_what_it_measured(tmp_path, monkeypatch):
    """A step killed at its limit: the numbers its record already holds stay, status timeout."""
    step = select("eager-b1-tiny", dry=True)[0]

    def fake_run(cmd, timeout, check):
        rec = Record(tmp_path / f"{step.name}.json")
        rec.put("first_call_s", 1.5)  # written the moment it existed ...
        raise subprocess.TimeoutExpired(cmd, timeout)  # ... then the step hung

    monkeypatch.setattr(gpu.subprocess, "run", fake_run)
    args = type("A", (), {"out": tmp_path, "cache": str(tmp_path), "iters": 1, "dry": True})()
    rec = gpu._run_child(step, args, timeout=7)
    assert rec["status"] == "timeout" and "7 s" in rec["reason"] and rec["result"] == {"first_call_s": 1.5}
    assert json.loads((tmp_path / f"{step.name}.json").read_text())["status"] == "timeout"


def test_default_plan_is_the_documented_one():
    """benchmarks/README.md's step table lists the default plan in its run order."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "benchmarks" / "README.md").read_text()
    rows = [ln.split("|") for ln in readme.splitlines() if ln.startswith("| ") and "`" in ln]
    documented = [r[2].strip().strip("`") for r in rows if r[1].strip().isdigit() and r[1].strip() != "0"]
    assert documented == [s.name for s in select("default", dry=False)]


def test_each_step_runs_under_twice_its_estimate_never_past_the_budget(tmp_path, monkeypatch):
    limits = {}

    def fake_child(step, args, timeout):
        limits[step.name] = timeout
        return {"status": "ok"}

    monkeypatch.setattr(gpu, "_run_child", fake_child)
    for name in gpu_plan.CHECKS:
        monkeypatch.setitem(gpu_plan.CHECKS, name, lambda dry: "ok (faked)")
    steps = select("env,eager-b1-full,compiled-b1-full", dry=False)
    assert main(["bench", "gpu", "--out", str(tmp_path), "--steps", ",".join(s.name for s in steps),
                 "--budget", "400"]) == 0
    env, eager, compiled = steps
    assert limits["env"] == 2 * env.estimate_s and limits["eager-b1-full"] == 2 * eager.estimate_s
    # compiled's twice-estimate would pass the budget: it gets what is left of it instead
    left = 400 - env.estimate_s - eager.estimate_s
    assert 2 * compiled.estimate_s > left and left - 5 < limits["compiled-b1-full"] <= left


def test_preflight_names_the_wheel_of_what_is_missing(monkeypatch):
    def carry_when(diffusers_says):
        monkeypatch.setitem(gpu_plan.CHECKS, "diffusers", lambda dry: f"missing: {diffusers_says}")
        monkeypatch.setitem(gpu_plan.CHECKS, "cc", lambda dry: "missing: no C compiler")
        pre = preflight(select("eager-b1-full,compiled-b1-full", dry=False), dry=False, log=lambda m: None)
        assert "cc" in pre["missing"]["compiled-b1-full"] and "diffusers" in pre["missing"]["eager-b1-full"]
        return [w for w in pre["carry"] if not w.startswith("diffusers==")]

    # the module an import names, or the distribution a version check names; no wheel for a compiler
    assert carry_when("ModuleNotFoundError: No module named 'requests'") == [gpu_plan.WHEELS["requests"]]
    assert carry_when("ImportError: huggingface-hub>=1.32.0 is required") == [gpu_plan.WHEELS["huggingface_hub"]]
    assert carry_when("ImportError: something else") == []
    assert main(["bench", "gpu", "--steps", "nope"]) == 2


def test_a_dry_record_is_never_kept_by_a_real_run(tiny_model_dir, tmp_path, monkeypatch):
    """A --dry (CPU) record in OUT is run again by a real run into the same OUT, never reported as
    "ok (kept)"; the real record is kept by the same real command and not by a dry one, nor by a
    run with other arguments."""
    cache, out = _cache(tmp_path, tiny_model_dir), tmp_path / "gpu"
    common = ["--in-process", "--out", str(out), "--cache", str(cache), "--steps", "env", "--iters", "1"]
    assert main(["bench", "gpu", "--dry"] + common) == 0  # a real dry record, written by the env step
    assert json.loads((out / "env.json").read_text())["key"]["dry"] is True
    ran = []

    def fake_step(step, args):  # the GPU run, faked: the step "measures" and records its key
        ran.append((step.name, args.dry, args.iters))
        rec = gpu_steps.Record(out / f"{step.name}.json", run_key(step, args))
        rec.put("gpu", "faked")
        return rec.finish("ok")

    monkeypatch.setattr(gpu_steps, "run_step", fake_step)
    monkeypatch.setitem(gpu_plan.CHECKS, "cuda", lambda dry: "ok (faked)")

    def env_after(argv):
        assert main(["bench", "gpu"] + argv) == 0
        return json.loads((out / "summary.json").read_text())["steps"]["env"]

    assert not env_after(common).get("kept") and ran == [("env", False, 1)]  # the dry record was not kept
    assert env_after(common)["kept"] and len(ran) == 1                         # the real one is, by a real run
    assert not env_after(["--dry"] + common).get("kept") and ran[-1] == ("env", True, 1)
    assert not env_after(common[:-1] + ["2"]).get("kept") and ran[-1] == ("env", False, 2)


def test_dry_and_real_runs_never_share_the_eager_reference(tmp_path):
    graphs, eager = select("graphs-b1-tiny", dry=True)[0], select("eager-b1-tiny", dry=True)[0]
    dry, real = (Namespace(out=tmp_path, cache="c", iters=1, dry=d) for d in (True, False))
    f32 = torch.float32
    assert gpu_steps._ref_path(dry, graphs, f32) == gpu_steps._ref_path(dry, eager, f32)  # writer = reader
    assert gpu_steps._ref_path(dry, graphs, f32) != gpu_steps._ref_path(real, graphs, f32)


def test_images_per_s_comes_from_the_median_latency(tmp_path, monkeypatch):
    step = select("eager-b8-tiny", dry=True)[0]
    times = iter([5000.0, 100.0, 400.0, 200.0])  # the first call, then 3 timed calls: median 200 ms
    monkeypatch.setattr(gpu_steps, "_timed", lambda fn: next(times))
    monkeypatch.setattr(gpu_steps, "_segmenter", lambda *a, **k: None)
    monkeypatch.setattr(gpu_steps, "_image", lambda args: None)
    rec = gpu_steps.Record(tmp_path / "x.json")
    gpu_steps.step_latency(step, Namespace(out=tmp_path, cache="c", iters=3, dry=True), rec)
    assert rec.data["result"]["images_per_s"] == pytest.approx(8 / 0.2)
