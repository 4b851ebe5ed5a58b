"""A Ray that `faseg-rt label` starts on this machine listens on loopback only, as serve's does
(faseg_rt/ray_env.py); clusters joined by address, and library callers' environments, are left
alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from faseg_rt import ray_env


@pytest.fixture
def clean_env(monkeypatch):
    for k in ray_env.LOCAL_RAY_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # restored after the test


@pytest.mark.parametrize("address, sets", [(None, True), ("local", True), ("auto", False),
                                           ("ray://head:10001", False)])
def test_the_local_ray_env_is_set_for_a_local_ray_only(clean_env, address, sets):
    assert ray_env.prefer_local_ray_env(address) is sets
    assert all((os.environ.get(k) == v) is sets for k, v in ray_env.LOCAL_RAY_ENV.items())


def test_a_variable_the_user_set_wins_and_nothing_is_set_once_ray_is_imported(clean_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ray_env.prefer_local_ray_env(None)
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    monkeypatch.setitem(sys.modules, "ray", object())
    assert not ray_env.prefer_local_ray_env(None) and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # no address then joins RAY_ADDRESS's cluster
    assert not ray_env.starts_local_ray(None) and ray_env.starts_local_ray("local")


LABEL_CLI = """
import sys
import faseg_rt.scale.label as scale_label
from faseg_rt.cli.main import main
from faseg_rt.ray_env import loopback_only

def fake_label(*a, **kw):  # stands in for the job: what would the Ray it starts do?
    print("LOOPBACK", loopback_only(sys.modules["ray"]), flush=True)
    raise SystemExit(0)

scale_label.label = fake_label
main(["label", sys.argv[1], "--classes", "cat", "--out", sys.argv[2], *sys.argv[3:]])
"""


@pytest.mark.parametrize("address", [None, "auto"])
def test_the_label_command_starts_its_local_ray_on_loopback(tmp_path, address):
    """In a fresh process, as the command runs: the installed Ray reads the variables the command
    set before importing it (single-machine mode: every port on 127.0.0.1); joining a cluster
    (--ray-address auto) leaves Ray's own mode."""
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'faseg_rt[ray]'")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    env = {k: v for k, v in os.environ.items() if k not in ray_env.LOCAL_RAY_ENV and k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    extra = ["--ray-address", address] if address else []
    p = subprocess.run([sys.executable, "-c", LABEL_CLI, str(tmp_path / "a.png"), str(tmp_path / "o"), *extra],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"LOOPBACK {address is None}" in p.stdout


def test_init_ray_starts_a_local_ray_without_dashboard_and_warns_a_command_when_too_late(caplog):
    class FakeRay:
        _private = type("P", (), {"ray_constants": type("C", (), {"ENABLE_RAY_CLUSTER": True})})

        def __init__(self):
            self.calls = []

        def is_initialized(self):
            return bool(self.calls)

        def init(self, **kw):
            self.calls.append(kw)

    ray = FakeRay()
    assert ray_env.init_ray(ray, "local") is True and ray.calls[0]["include_dashboard"] is False
    assert ray_env.init_ray(ray, "local") is None and len(ray.calls) == 1  # already up: nothing done
    assert "every interface" not in caplog.text  # a library call: no command, no warning
    assert ray_env.init_ray(FakeRay(), "local", "faseg-rt label") is True
    assert "before faseg-rt label could set" in caplog.text
    ray = FakeRay()
    assert ray_env.init_ray(ray, "auto") is False and "include_dashboard" not in ray.calls[0]
