"""The service's parts that need no Ray: form checks, one dynamic batch, settings, the label PNG.

The batch runner is checked against single `Segmenter.__call__` calls (the answer a request must
equal), on the 64 px small segmenter at one torch thread (identical reduction order).
"""

from __future__ import annotations

import base64
import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from faseg_rt.errors import InvalidInputError
from faseg_rt.io import label_png_bytes, save_label_png
from faseg_rt.serve.batcher import BatchStats, run_batch
from faseg_rt.serve.request import SegmentRequest, answer, build_request
from faseg_rt.serve.settings import ServeSettings
from faseg_rt.testing import synthetic_image


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fields, message", [
    ({"classes": "cat,,dog"}, "class #1 is empty"),
    ({"classes": "cat, Cat"}, "appears twice"),
    ({"classes": ""}, "the class list is empty"),
    ({"classes": "[1, 2]"}, "JSON list of strings"),
    ({"classes": "[\"cat\""}, "not valid JSON"),
    ({"classes": "cat", "threshold": "1.5"}, "must lie in [0, 1]"),
    ({"classes": "cat", "threshold": "nan"}, "must lie in [0, 1]"),
    ({"classes": "cat", "threshold": "high"}, "must be a number"),
    ({"classes": "cat", "candidates": "some"}, "'recognizer' or a JSON list"),
    ({"classes": "cat", "colour": "red"}, "unknown form field"),
    ({}, "no 'classes' field"),
])
def test_bad_fields_are_one_line_errors(fields, message):
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        build_request(_png(synthetic_image(24, 20)), fields)
    assert "\n" not in str(e.value)


def _form_request(field: str, filename: str | None, value: bytes):
    """A starlette Request of a multipart body with one part, and that body."""
    from starlette.requests import Request

    boundary = "faseg-test-boundary"
    name = f'name="{field}"' + (f'; filename="{filename}"' if filename else "")
    body = (f"--{boundary}\r\nContent-Disposition: form-data; {name}\r\n\r\n").encode() + value + \
        f"\r\n--{boundary}--\r\n".encode()
    headers = [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
               (b"content-length", str(len(body)).encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}), body


@pytest.mark.parametrize("field, message", [
    ("img", "the form field 'img' is not one this service reads: send the photo as the field 'image'"),
    ("classes", "the form field 'classes' must be text, not a file; send the photo as the field 'image'"),
])
def test_a_file_under_another_field_names_the_image_field(field, message):
    import asyncio

    from faseg_rt.serve.http import read_form

    request, body = _form_request(field, "photo.png", _png(synthetic_image(24, 20)))
    with pytest.raises(InvalidInputError) as e:
        asyncio.run(read_form(request, body))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    request, body = _form_request("image", "photo.png", b"bytes")  # the right field reads
    assert asyncio.run(read_form(request, body)) == (b"bytes", {})


# the oversized image is a decompression bomb on purpose: PIL warns, our pixel limit refuses it
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_images_are_refused_with_the_package_messages():
    with pytest.raises(InvalidInputError, match="not an image"):
        build_request(b"GIF89a but not really", {"classes": "cat"})
    with pytest.raises(InvalidInputError, match="empty"):
        build_request(b"", {"classes": "cat"})
    from test_reliability_inputs import png_bytes

    from faseg_rt.images import MAX_IMAGE_PIXELS

    with pytest.raises(InvalidInputError, match=f"over the limit of {MAX_IMAGE_PIXELS}"):
        build_request(png_bytes(12000, 12000, b"\0" * 10), {"classes": "cat"})


def test_fields_are_parsed_like_the_cli():
    r = build_request(_png(synthetic_image(24, 20)),
                      {"classes": " cat , potted  plant", "caption": "  ", "threshold": "0.4",
                       "candidates": '["cat"]'})
    assert r.classes == ("cat", "potted plant") and r.caption is None and r.threshold == 0.4
    assert r.candidates == ("cat",) and r.image.size == (24, 20)
    r = build_request(_png(synthetic_image(24, 20)), {"classes": '["a, b", "c"]', "candidates": "auto"})
    assert r.classes == ("a, b", "c") and r.candidates == "auto"


def test_label_png_bytes_are_the_mask_file(tmp_path):
    for top in (3, 300):  # palette PNG and 16-bit PNG
        labels = np.random.default_rng(top).integers(0, top + 1, (7, 9)).astype(np.int32)
        save_label_png(labels, tmp_path / "m.png")
        assert label_png_bytes(labels) == (tmp_path / "m.png").read_bytes()


def test_a_batch_answers_each_request_as_a_single_call(small_segmenter, one_thread):
    """Two vocabularies, two thresholds, a caption and a request the package refuses (an unknown
    candidate): each good request equals its own __call__, the bad one gets its own error."""
    imgs = [synthetic_image(40 + 8 * i, 30 + 4 * i, seed=50 + i) for i in range(5)]
    reqs = [SegmentRequest(imgs[0], ("cat", "sky")),
            SegmentRequest(imgs[1], ("dog", "grass", "car"), caption="a street"),
            SegmentRequest(imgs[2], ("cat", "sky"), threshold=0.3),
            SegmentRequest(imgs[3], ("cat", "sky"), candidates=("horse",)),
            SegmentRequest(imgs[4], ("cat", "sky"))]
    stats = BatchStats()
    out = run_batch(small_segmenter, reqs, stats)
    assert isinstance(out[3], InvalidInputError) and "horse" in str(out[3])
    for i in (0, 1, 2, 4):
        r = reqs[i]
        ref = small_segmenter(r.image, classes=list(r.classes), caption=r.caption,
                              threshold=r.threshold)
        got = out[i].json()
        assert got["classes"] == list(r.classes) and (got["width"], got["height"]) == imgs[i].size
        assert got["caption"] == r.caption and got["scores"] is None
        assert base64.b64decode(got["labels_png"]) == label_png_bytes(ref.labels), i
    snap = stats.snapshot()
    # 3 groups (the 3-class vocabulary, cat/sky at 0.55 and at 0.3), then the refused group of
    # three (images 0, 3, 4) once more request by request
    assert snap["batches"] == 1 and snap["requests"] == 5 and snap["largest_batch"] == 5
    assert snap["segment_batch_calls"] == 3 + 3


def test_a_mixed_batch_is_byte_equal_to_single_calls_whatever_shares_it(small_segmenter):
    """Groups of several requests (two vocabularies, captions, two thresholds), in different
    batch compositions: every answer's mask is the bytes of its own single call's (the replica's
    Segmenter is batch-invariant by default); the same request gets the same bytes each time."""
    imgs = [synthetic_image(40 + 8 * i, 30 + 4 * i, seed=70 + i) for i in range(6)]
    reqs = [SegmentRequest(imgs[0], ("cat", "sky")),
            SegmentRequest(imgs[1], ("dog", "grass", "car"), caption="a street"),
            SegmentRequest(imgs[2], ("cat", "sky"), caption="a cat on a mat"),
            SegmentRequest(imgs[3], ("dog", "grass", "car")),
            SegmentRequest(imgs[4], ("cat", "sky")),
            SegmentRequest(imgs[5], ("cat", "sky"), threshold=0.3)]
    singles = [label_png_bytes(small_segmenter(r.image, classes=list(r.classes), caption=r.caption,
                                               threshold=r.threshold).labels) for r in reqs]
    for order in ([0, 1, 2, 3, 4, 5], [4, 0, 2], [3, 1], [5, 2, 4, 0]):
        stats = BatchStats()
        out = run_batch(small_segmenter, [reqs[i] for i in order], stats)
        for i, a in zip(order, out):
            assert base64.b64decode(a.json()["labels_png"]) == singles[i], (order, i)
        assert stats.snapshot()["segment_batch_calls"] == len({reqs[i].group for i in order})


def test_answer_fields_and_header():
    from faseg_rt.results import SegmentationResult

    res = SegmentationResult(labels=np.array([[0, 2], [1, 1]], np.int32), scores=None,
                             classes=("cät", "dog"), threshold=0.5, caption="x",
                             class_scores=np.array([0.9, 0.1], np.float32))
    a = answer(res)
    assert a.fields == {"classes": ["cät", "dog"], "width": 2, "height": 2, "caption": "x",
                        "candidates": ["cät", "dog"], "sources": None,
                        "scores": {"cät": float(np.float32(0.9)), "dog": float(np.float32(0.1))}}
    header = a.header()
    assert header.isascii() and json.loads(header) == a.fields


def test_settings_are_checked_before_anything_deploys(tiny_model_dir, tmp_path):
    s = ServeSettings.make(str(tiny_model_dir), max_batch_size="4", batch_wait_ms=0)
    assert s.max_batch_size == 4 and s.batch_wait_ms == 0.0 and s.model == str(tiny_model_dir.resolve())
    assert s.batching == "invariant" and s.batch_invariant
    shared = ServeSettings.make(str(tiny_model_dir), batching="shared")
    assert shared.batching == "shared" and not shared.batch_invariant
    for kw, msg in [({"max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
                    ({"replicas": 1.5}, "replicas must be an integer"),
                    ({"max_queued": -1}, "max_queued must be an integer >= 0"),
                    ({"max_request_mb": 0}, "max_request_mb must be a finite number >= 0.01"),
                    ({"batch_wait_ms": "soon"}, "batch_wait_ms must be a finite number"),
                    ({"batch_wait_ms": float("inf")}, "batch_wait_ms must be a finite number"),
                    ({"body_timeout_s": "inf"}, "body_timeout_s must be a finite number"),
                    ({"max_batch_size": True}, "max_batch_size must be an integer"),
                    ({"max_pixels": 0}, "max_pixels must be an integer >= 1"),
                    ({"max_classes": 2.5}, "max_classes must be an integer"),
                    ({"dtype": "int8"}, "unknown dtype"),
                    ({"batching": "sometimes"}, "batching must be one of"),
                    ({"colour": 1}, "unknown service setting")]:
        with pytest.raises(InvalidInputError, match=msg):
            ServeSettings.make(str(tiny_model_dir), **kw)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="empty"):
        ServeSettings.make(str(tmp_path / "empty"))


def test_without_ray_serve_the_command_says_how_to_install(monkeypatch, capsys, tiny_model_dir):
    from faseg_rt.cli.main import main
    from faseg_rt.serve.run import SERVE_MISSING

    monkeypatch.setitem(sys.modules, "ray.serve", None)  # makes the import raise ImportError
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)  # restored after
    rc = main(["serve", "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"faseg-rt: error: {SERVE_MISSING}"]


# Ray Serve's ASGI ingress wrapper defines an async __del__, which Python never awaits (upstream)
@pytest.mark.filterwarnings("ignore:coroutine .*ASGIIngressWrapper.__del__' was never awaited:RuntimeWarning")
def test_liveness_and_readiness_while_loading_loaded_and_failed(tiny_model_dir):
    """The replica's routes as plain coroutines (no Serve running): /healthz is 200 while the
    model loads (liveness), /readyz 503 + Retry-After until it is loaded; a failed load is 503
    on both, without the exception's class or any absolute path."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'faseg_rt[serve]'")
    import asyncio

    import torch

    from faseg_rt.serve.app import FASegService

    cls = FASegService.func_or_class
    replica = cls.__new__(cls)  # the state __init__ sets, without its background load
    replica.settings, replica._seg, replica._load_error = ServeSettings.make(str(tiny_model_dir)), None, None
    live, ready = asyncio.run(replica.healthz()), asyncio.run(replica.readyz())
    assert live == {"status": "loading", "model": "tiny-sd15", "backend": "torch"}
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
    assert json.loads(ready.body) == {"error": "the model is loading; retry shortly"}
    replica._load_error = f"ModelLoadError: no unet/ in {tiny_model_dir.resolve()}"
    for r in (asyncio.run(replica.healthz()), asyncio.run(replica.readyz())):
        assert r.status_code == 503
        assert json.loads(r.body) == {"error": "the model failed to load: no unet/ in tiny-sd15"}

    from faseg_rt.precision import precision_policy

    class Loaded:  # what the routes read of a Segmenter
        device, dtype = torch.device("cpu"), torch.float32
        precision = precision_policy(torch.float32, "cpu")

    replica._seg, replica._load_error = Loaded(), None
    want = {"status": "ok", "model": "tiny-sd15", "backend": "torch", "device": "cpu", "dtype": "float32",
            "precision": precision_policy(torch.float32, "cpu").names()}
    assert want["precision"]["hard"] == "float32" and want["precision"]["captioner"] == "float32"
    assert asyncio.run(replica.healthz()) == want and asyncio.run(replica.readyz()) == want


def test_the_page_has_a_candidates_field_in_its_form():
    from html.parser import HTMLParser

    from faseg_rt.serve.page import PAGE

    class Fields(HTMLParser):
        def __init__(self):
            super().__init__()
            self.in_form, self.names = False, []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.in_form |= tag == "form"
            if self.in_form and tag == "input":
                self.names.append(attrs.get("name"))

        def handle_endtag(self, tag):
            self.in_form &= tag != "form"

    parser = Fields()
    parser.feed(PAGE)
    assert parser.names == ["image", "classes", "caption", "candidates", "threshold", "exif_transpose"]
    assert "__MODES__" not in PAGE


#: The page's script run in Node with the browser objects it touches stubbed: it submits the
#: form with the typed candidates and prints the fields it sent to POST /v1/segment.
_SUBMIT = """
const typed = process.env.TYPED;
let handler = null, sent = null;
const element = { addEventListener: (_, f) => { handler = f; }, dataset: {}, textContent: "" };
global.document = { getElementById: () => element };
global.FormData = class { constructor(fields) { this.m = new Map(Object.entries(fields)); }
  get(k) { return this.m.has(k) ? this.m.get(k) : null; } set(k, v) { this.m.set(k, v); }
  delete(k) { this.m.delete(k); } has(k) { return this.m.has(k); } };
global.fetch = async (url, opts) => { sent = [url, Object.fromEntries(opts.body.m)];
  return { ok: false, status: 400, json: async () => ({ error: "stop" }) }; };
%s
handler({ preventDefault() {}, target: { image: "photo", classes: "cat, sofa", caption: "",
          threshold: "", candidates: typed } }).then(() => console.log(JSON.stringify(sent)));
"""


@pytest.mark.parametrize("typed, field", [
    ("auto", "auto"), ("recogniser", "recognizer"), ("cat, sofa", ("cat", "sofa")),
    (" sofa ", ("sofa",)), ('["sofa"]', ("sofa",)), ("", None),
])
def test_the_page_sends_the_candidates_the_api_takes(typed, field):
    """The script sends a mode or a JSON list (a comma list typed by hand becomes one) as the
    `candidates` form field, and nothing when the field is empty; the API parses what it sent."""
    import re
    import shutil
    import subprocess

    from faseg_rt.serve.page import PAGE
    from faseg_rt.serve.request import parse_candidates

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no Node.js to run the page's script (the headless-browser test in test_serve.py covers it)")
    script = re.search(r"<script>(.*)</script>", PAGE, re.S).group(1)
    p = subprocess.run([node, "-e", _SUBMIT % script], capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "TYPED": typed})
    assert p.returncode == 0, p.stderr
    url, fields = json.loads(p.stdout)
    assert url == "/v1/segment" and fields["classes"] == "cat, sofa"
    assert "caption" not in fields and "threshold" not in fields     # empty fields are not sent
    assert parse_candidates(fields.get("candidates")) == field


class _FakeRay:
    """ray.init's recorder: no cluster starts."""

    def __init__(self, loopback: bool):
        self.calls = []
        self._private = type("P", (), {"ray_constants": type("C", (), {"ENABLE_RAY_CLUSTER": not loopback})})

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.calls.append(kwargs)


def test_a_local_ray_starts_without_dashboard_and_a_cluster_is_joined_as_it_is(monkeypatch, caplog):
    from faseg_rt.serve.run import start_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray = _FakeRay(loopback=True)
    assert start_ray(ray, None) is True and start_ray(ray, "local") is True
    for kw in ray.calls:
        assert kw["include_dashboard"] is False and kw["log_to_driver"] is False
    assert "every interface" not in caplog.text
    ray = _FakeRay(loopback=True)
    assert start_ray(ray, "ray://head:10001") is False
    assert "include_dashboard" not in ray.calls[0] and ray.calls[0]["address"] == "ray://head:10001"
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # no address joins RAY_ADDRESS's cluster
    assert start_ray(_FakeRay(loopback=True), None) is False
    monkeypatch.delenv("RAY_ADDRESS")
    start_ray(_FakeRay(loopback=False), None)  # Ray imported too early: said, not hidden
    assert "listen on every interface" in caplog.text


@pytest.mark.parametrize("local", [True, False])
def test_the_installed_ray_keeps_a_local_ray_on_loopback(local):
    """import_serve(local=True) sets LOCAL_RAY_ENV before Ray is imported, and the installed
    Ray reads it (its single-machine mode: every port on 127.0.0.1); joining a cluster does not."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'faseg_rt[serve]'")
    import os
    import subprocess

    from faseg_rt.ray_env import LOCAL_RAY_ENV

    code = ("from faseg_rt.ray_env import loopback_only\nfrom faseg_rt.serve.run import import_serve\n"
            f"ray, _ = import_serve(local={local})\n"
            "print(loopback_only(ray), ray._private.services.get_node_ip_address())")
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_RAY_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout.split()
    assert out[0] == str(local)
    if local:  # (without, the node's address: loopback too on a machine with no network)
        assert out[1] == "127.0.0.1"
