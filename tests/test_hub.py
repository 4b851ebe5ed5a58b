"""Loading fails fast and in one line, and a normal load is quiet.

No real hub is reachable here, so the hub is played by what a user meets: an endpoint that refuses
connections on a local port, a tiny local HTTP server answering "not found" / "gated" the way the
hub does, HF_HUB_OFFLINE, and a hand-made hub cache.
"""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from faseg_rt.errors import ModelLoadError
from faseg_rt.hub import locate
from faseg_rt.model import COMPONENTS, resolve_model

ROOT = Path(__file__).resolve().parent.parent


def _closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def online(monkeypatch):
    """Downloads allowed (the test session sets HF_HUB_OFFLINE=1); returns a setter for the endpoint."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return lambda url: monkeypatch.setattr(constants, "ENDPOINT", url)


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers every model lookup like the hub does for an unknown or a gated repository."""

    def do_GET(self):  # noqa: N802 - the http.server API
        gated = "gated" in self.path
        self.send_response(403 if gated else 404)
        self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
        self.send_header("X-Error-Message", "gated" if gated else "Repository not found")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "x"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_local_directory_is_used_as_it_is(tiny_model_dir, tmp_path):
    assert resolve_model(tiny_model_dir) == str(tiny_model_dir)
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelLoadError, match="missing vae/, text_encoder/, tokenizer/"):
        resolve_model(tmp_path)
    with pytest.raises(ModelLoadError, match="neither an existing directory nor a hub id"):
        locate(tmp_path / "nope" / "deeper", "SD model")


def _no_waiting(monkeypatch) -> list:
    """Record every time.sleep (a retry's back-off) instead of sleeping: "at once" means none."""
    sleeps = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    return sleeps


def test_offline_and_not_cached_says_so_at_once(monkeypatch):
    sleeps = _no_waiting(monkeypatch)

    def no_network(*args, **kwargs):
        raise AssertionError("offline: nothing may open a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ModelLoadError) as e:
        locate("someone/not-cached", "captioner")
    msg = str(e.value)
    assert "someone/not-cached" in msg and "HF_HUB_OFFLINE" in msg and "hf download" in msg
    assert "\n" not in msg and sleeps == []


def test_unreachable_hub_fails_in_one_line_without_retrying(online, monkeypatch):
    online(f"http://127.0.0.1:{_closed_port()}")
    sleeps = _no_waiting(monkeypatch)
    with pytest.raises(ModelLoadError) as e:
        locate("someone/some-model", "SD model")
    assert sleeps == [], f"retried with back-off {sleeps}"
    msg = str(e.value)
    assert "unreachable" in msg and "someone/some-model" in msg and "local directory" in msg
    assert "\n" not in msg


def test_unknown_and_gated_ids_are_named(online, fake_hub):
    online(fake_hub)
    with pytest.raises(ModelLoadError, match="was not found on the Hugging Face hub"):
        locate("someone/typo", "recogniser")
    with pytest.raises(ModelLoadError, match="is gated: accept its terms"):
        locate("someone/gated-model", "recogniser")


def test_a_cached_hub_id_loads_from_the_cache_without_network(tmp_path, monkeypatch, online):
    from huggingface_hub import constants

    online(f"http://127.0.0.1:{_closed_port()}")  # any network use would fail
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someone--cached"
    snap = repo / "snapshots" / ("0" * 40)
    for c in COMPONENTS:
        (snap / c).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    assert locate("someone/cached", "SD model", required=COMPONENTS) == str(snap)
    # a copy downloaded in part is not used: the hub is asked (here: unreachable, one line)
    (snap / "unet").rmdir()
    with pytest.raises(ModelLoadError, match="unreachable"):
        locate("someone/cached", "SD model", required=COMPONENTS)


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


@pytest.mark.slow  # a fresh interpreter imports torch and diffusers
def test_cli_with_an_unreachable_model_prints_one_line_and_exits_2(tmp_path):
    from faseg_rt.testing import synthetic_image

    synthetic_image(40, 32).save(tmp_path / "a.png")
    env = _clean_env(HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}")
    r = subprocess.run([sys.executable, "-m", "faseg_rt.cli", "segment", str(tmp_path / "a.png"),
                        "--classes", "cat", "--model", "someone/unreachable", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "someone/unreachable" in lines[0] and "unreachable" in lines[0], r.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


@pytest.mark.slow  # a fresh interpreter loads the model
def test_a_default_load_prints_nothing(tiny_model_dir):
    """No library chatter on a normal load: no accelerate hint, no cast warning, no progress bar;
    and the caller's logging settings are left as they were."""
    code = ("import warnings, transformers, diffusers\n"
            "warnings.simplefilter('always')\n"
            "from faseg_rt import Segmenter\n"
            f"Segmenter.from_pretrained({str(tiny_model_dir)!r}, device='cpu')\n"
            "assert transformers.utils.logging.is_progress_bar_enabled()\n"
            "assert diffusers.utils.logging.get_verbosity() == diffusers.utils.logging.WARNING\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(),
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", r.stderr
