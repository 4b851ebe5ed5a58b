"""The service's limits and policies that need no Ray running: the caps checked before any work
(classes, pixels from the header, front-end models, the body deadline), messages fit for a
client, the bounded result header, the batch retry policy, the cluster arithmetic, one source
of defaults."""

from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
from PIL import Image

from faseg_rt.errors import InvalidInputError
from faseg_rt.serve.request import MAX_HEADER_BYTES, Answer, Limits, check_request, decode_request
from faseg_rt.testing import synthetic_image


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _bomb(width: int, height: int) -> bytes:
    """A 1-bit PNG of width x height, all zero: a few KB that decode to width * height pixels."""
    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def test_the_pixel_cap_is_read_from_the_header_before_decoding(monkeypatch):
    import faseg_rt.serve.request as request

    bomb = _bomb(4000, 3000)
    assert len(bomb) < 20_000
    monkeypatch.setattr(request, "load_image", lambda *a: pytest.fail("decoded before the cap"))
    with pytest.raises(InvalidInputError, match="4000 x 3000 = 12000000 pixels, over the limit of "
                                                "1000000 pixels"):
        check_request(bomb, {"classes": "cat"}, Limits(max_pixels=1_000_000))
    checked = check_request(bomb, {"classes": "cat"}, Limits(max_pixels=12_000_000))
    assert checked.image == bomb  # still encoded: decoding waits for a place in a batch


def test_class_cap_front_end_and_flags_are_checked_before_any_model():
    image = _png(synthetic_image(24, 20))
    with pytest.raises(InvalidInputError, match="3 classes is over this service's limit of 2 per "
                                                r"request \(its --max-classes\)"):
        check_request(image, {"classes": "a,b,c"}, Limits(max_classes=2))
    none = Limits(captioner=False, recognizer=False)
    for fields, flag in [({"caption": "auto"}, "--captioner"), ({"candidates": "caption"}, "--captioner"),
                         ({"candidates": "recogniser"}, "--recognizer"),
                         ({"candidates": "auto", "caption": "a room"}, "--recognizer")]:
        with pytest.raises(InvalidInputError, match=flag) as e:
            check_request(image, {"classes": "cat", **fields}, none)
        assert "Error" not in str(e.value)
    ok = check_request(image, {"classes": "cat", "candidates": "caption", "caption": "a cat"}, none)
    assert ok.candidates == "caption"
    with pytest.raises(InvalidInputError, match="exif_transpose must be 1 or 0"):
        check_request(image, {"classes": "cat", "exif_transpose": "maybe"})


def test_exif_transpose_turns_the_photo_before_segmenting():
    img = synthetic_image(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: a viewer turns it 90 degrees
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    plain = decode_request(check_request(buf.getvalue(), {"classes": "cat"}))
    upright = decode_request(check_request(buf.getvalue(), {"classes": "cat", "exif_transpose": "1"}))
    assert plain.image.size == (40, 20) and upright.image.size == (20, 40)


def test_messages_to_clients_are_cut_and_name_no_paths():
    from faseg_rt.serve.http import client_message

    name = "x" * 10_000
    with pytest.raises(InvalidInputError) as e:
        check_request(_png(synthetic_image(24, 20)), {"classes": f"{name},{name}"})
    text = client_message(e.value)
    assert len(text) < 300 and "(10002 characters)" in text and "appears twice" in text
    assert client_message("no unet/ in /home/me/models/tiny-sd15") == "no unet/ in tiny-sd15"
    with pytest.raises(InvalidInputError, match="not an image this service reads") as e:
        check_request(b"GIF89a but not really", {"classes": "cat"})
    assert "PIL" not in str(e.value) and "bytes)" not in str(e.value)


def test_the_result_header_is_bounded_at_3000_classes():
    classes = [f"class number {i}" for i in range(3000)]
    a = Answer(b"png", {"classes": classes, "candidates": classes, "width": 1, "height": 1})
    assert a.header() is None and json.loads(json.dumps(a.json()))["classes"] == classes
    small = Answer(b"png", {"classes": classes[:10]})
    assert len(small.header()) <= MAX_HEADER_BYTES and json.loads(small.header()) == small.fields


def _trickling_request(chunks: list[bytes], gap_s: float):
    """A starlette Request whose body arrives one chunk per gap_s (a slow client)."""
    from starlette.requests import Request

    sent = iter(chunks)

    async def receive():
        await asyncio.sleep(gap_s)
        chunk = next(sent, None)
        return {"type": "http.request", "body": chunk or b"", "more_body": chunk is not None}

    headers = [(b"content-length", str(sum(map(len, chunks))).encode())]
    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


def test_a_body_must_arrive_within_the_deadline():
    from faseg_rt.serve.http import BodyTimeout, read_body

    slow = _trickling_request([b"x"] * 50, gap_s=0.05)
    with pytest.raises(BodyTimeout, match=r"did not arrive within 0.5 s \(\d+ bytes came\)"):
        asyncio.run(read_body(slow, cap=1000, timeout_s=0.5))
    fast = _trickling_request([b"ab", b"cd"], gap_s=0.0)
    assert asyncio.run(read_body(fast, cap=1000, timeout_s=5)) == b"abcd"


class _OOM(RuntimeError):
    pass


@pytest.mark.parametrize("error, reruns", [(ValueError("bad input"), True),
                                          (MemoryError(), False),
                                          (RuntimeError("CUDA out of memory. Tried to allocate"), False)])
def test_a_failed_batch_reruns_each_item_once_except_out_of_memory(error, reruns):
    from faseg_rt.retry import run_isolating

    calls = []

    def run(items):
        calls.append(list(items))
        if len(items) > 1 or items == ["bad"]:
            raise error
        return [f"ok {items[0]}"]

    out, n = run_isolating(run, ["a", "bad", "c"])
    if reruns:
        assert out[0] == "ok a" and out[2] == "ok c" and out[1] is error and n == 4
        assert calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    else:
        assert out == [error] * 3 and n == 1 and calls == [["a", "bad", "c"]]


def test_the_label_worker_uses_the_same_policy(tmp_path):
    from faseg_rt.scale.worker import _SegmentWorker

    class Seg:
        calls = 0

        def segment_batch(self, images, *a, **kw):
            Seg.calls += 1
            raise MemoryError("out of memory")

    w = _SegmentWorker.__new__(_SegmentWorker)
    w.seg, w.out, w.classes, w.threshold, w.batch_size = Seg(), tmp_path, ["cat"], None, 2
    rows = w._segment([(0, "a.png", None, (None, None)), (1, "b.png", None, (None, None))])
    assert Seg.calls == 1 and [r[1] for r in rows] == ["MemoryError: out of memory"] * 2


class _Ray:
    def __init__(self, *nodes):
        self._nodes = [{"Alive": True, "Resources": r} for r in nodes] + [
            {"Alive": False, "Resources": {"CPU": 64.0}}]

    def nodes(self):
        return self._nodes


def test_replica_resources_come_from_one_node():
    from faseg_rt.serve.run import replica_resources

    # two nodes of 5 CPUs: 3 replicas of 3 CPUs would not fit (the cluster total says they do)
    assert replica_resources(_Ray({"CPU": 5.0}, {"CPU": 5.0}), 3, None)["num_cpus"] == 2.0
    assert replica_resources(_Ray({"CPU": 8.0}), 1, None) == {"num_cpus": 8.0, "num_gpus": 0.0,
                                                              "num_threads": 8}
    assert replica_resources(_Ray({"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}), 2, None) == \
        {"num_cpus": 1.0, "num_gpus": 1.0}
    assert replica_resources(_Ray({"CPU": 4.0, "GPU": 1.0}), 1, "cpu")["num_gpus"] == 0.0


def test_ready_waits_for_every_replica():
    from faseg_rt.serve.run import wait_loaded

    class Handle:
        """Two replicas, asked in turn: r1 loaded at once, r2 after three asks."""
        asks = 0

        class load_state:
            @staticmethod
            def remote():
                Handle.asks += 1
                name = "r1" if Handle.asks % 2 else "r2"
                state = {"loaded": name == "r1" or Handle.asks > 6, "error": None, "replica": name}
                return type("Ref", (), {"result": lambda self, timeout_s: state})()

    wait_loaded(Handle(), timeout_s=30, replicas=2)
    assert Handle.asks >= 7  # one loaded replica was not enough


def test_the_cli_flags_take_their_defaults_from_the_settings():
    from faseg_rt.cli.main import build_parser
    from faseg_rt.serve.settings import NUMBERS, ServeSettings

    args = build_parser().parse_args(["serve"])
    for name in NUMBERS:
        if hasattr(args, name):
            assert getattr(args, name) == ServeSettings.default(name), name
    assert args.captioner is None and args.recognizer is None  # nothing loads unless named
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--body-timeout", "inf"])


def test_the_memory_bound_is_written_from_the_settings():
    from faseg_rt.serve.settings import UPLOAD_SLOTS, ServeSettings

    s = ServeSettings(model="m", max_batch_size=4, max_queued=8, max_request_mb=1, max_pixels=10**6)
    bound = s.memory_bound()
    assert bound["bodies"] == (UPLOAD_SLOTS + 2 * 4 + 8) * 2**20
    assert bound["decoded"] == 2 * 4 * 3 * 10**6 and bound["total"] == sum(
        v for k, v in bound.items() if k != "total")
    assert np.isfinite(bound["total"])
