"""`faseg-rt serve` end to end: ONE real service process shared by the module, on loopback.

The fixture runs the CLI itself (a fresh local Ray, Serve, one replica on the 128 px small config
with one torch thread).  A request served alone is compared byte for byte with `faseg-rt segment`
at the same thread count, and requests served in one batch with single Python API calls, byte
for byte too: the service's batching is batch-invariant by default (each image runs alone
through the networks).  The last test sends it SIGTERM and checks that every process it started
is gone.  Requests go to 127.0.0.1 only, in bounded loops.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faseg_rt.precision import STAGES
from faseg_rt.testing import synthetic_image
from faseg_rt.testing.ray_cluster import alive, cli_command, descendants, free_port, kill_tree, small_env

pytestmark = pytest.mark.slow  # starts Ray and Serve: the slow tier (CI runs it)
pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'faseg_rt[serve]'")
requests = pytest.importorskip("requests", reason="requests is not installed")

# max queued: above any test's concurrency but the flood's (Serve's router may refuse a few more
# than the queue holds while simultaneous requests race for it)
MAX_BATCH, MAX_QUEUED, MAX_MB = 4, 8, 1
BODY_TIMEOUT_S, MAX_PIXELS, MAX_CLASSES = 5, 4_000_000, 3000
LATENT = 16  # the replica's and the reference's small_config grid
READY_TIMEOUT_S = 300
HTTP_TIMEOUT_S = 120


class Service:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.url, self.log = proc, f"http://127.0.0.1:{port}", log
        self.tree: list[int] = []

    def post(self, image: bytes, headers=None, timeout=HTTP_TIMEOUT_S, **fields):
        return requests.post(self.url + "/v1/segment", files={"image": ("x.png", image)},
                             data=fields, headers=headers, timeout=timeout)


def _wait_ready(svc: Service) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = svc.log.read_text(errors="replace")
        if "ready on" in text:
            return
        if svc.proc.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"faseg-rt serve did not become ready (rc {svc.proc.poll()}):\n"
                f"{svc.log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def service(tiny_model_dir, tmp_path_factory):
    """`faseg-rt serve` on the tiny model at small_config(LATENT) (its --config option)."""
    from faseg_rt.testing import write_small_config

    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    config = write_small_config(log.parent / "small.json", LATENT)
    cmd = cli_command("serve", "--model", str(tiny_model_dir), "--device", "cpu", "--port", str(port),
                      "--config", str(config),
                      "--address", "local", "--max-batch-size", str(MAX_BATCH), "--batch-wait-ms",
                      "400", "--max-queued", str(MAX_QUEUED), "--max-request-mb", str(MAX_MB),
                      "--num-threads", "1", "--body-timeout", str(BODY_TIMEOUT_S),
                      "--max-pixels", str(MAX_PIXELS), "--max-classes", str(MAX_CLASSES))
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            env=small_env(),
                            start_new_session=True)
    svc = Service(proc, port, log)
    svc.model = str(tiny_model_dir)
    try:
        _wait_ready(svc)
        svc.tree = descendants(proc.pid)
        yield svc
    finally:
        if proc.poll() is None:
            kill_tree(proc, signal.SIGTERM, grace_s=60)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """The in-process Segmenter the replica runs (same model, config and thread count)."""
    import torch

    from faseg_rt import Segmenter
    from faseg_rt.testing import small_config

    return Segmenter.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.float32,
                                     config=small_config(LATENT))


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _labels(png: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(png)))


def _reference(seg, img, classes, **kw) -> bytes:
    from faseg_rt.io import label_png_bytes

    return label_png_bytes(seg(img, classes=classes, **kw).labels)


def test_health_page_and_openapi(service):
    for route in ("/healthz", "/readyz"):
        r = requests.get(service.url + route, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "model": Path(service.model).name, "backend": "torch",
                            "device": "cpu", "dtype": "float32",
                            "precision": {s: "float32" for s in STAGES}}
    docs = requests.get(service.url + "/docs", timeout=HTTP_TIMEOUT_S)
    assert docs.status_code == 200 and "/openapi.json" in docs.text and "https://" not in docs.text
    page = requests.get(service.url + "/", timeout=HTTP_TIMEOUT_S)
    assert page.status_code == 200 and 'id="overlay"' in page.text and "/v1/segment" in page.text
    spec = requests.get(service.url + "/openapi.json", timeout=HTTP_TIMEOUT_S).json()
    body = spec["paths"]["/v1/segment"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(body["schema"]["required"]) == {"image", "classes"}
    assert {"/healthz", "/v1/stats", "/"} <= set(spec["paths"])


def test_answer_equals_the_cli_mask_file(service, reference, one_thread, tmp_path):
    from faseg_rt.cli.segment import segment_files

    img = synthetic_image(96, 64, seed=1)
    (tmp_path / "a.png").write_bytes(_png(img))
    r = service.post(_png(img), classes="cat, potted plant,sky", caption="a photo of a room",
                     threshold="0.5")
    assert r.status_code == 200, r.text
    got = r.json()
    assert segment_files(reference, [str(tmp_path / "a.png")], ["cat", "potted plant", "sky"],
                         tmp_path / "out", caption="a photo of a room", threshold=0.5,
                         progress=False) == []
    assert base64.b64decode(got["labels_png"]) == (tmp_path / "out" / "a.png").read_bytes()
    side = json.loads((tmp_path / "out" / "a.json").read_text())
    assert {k: got[k] for k in ("classes", "caption", "candidates", "scores")} == \
        {k: side[k] for k in ("classes", "caption", "candidates", "scores")}
    assert (got["width"], got["height"]) == (96, 64)
    png = service.post(_png(img), headers={"Accept": "image/png"}, classes='["cat", "sky"]')
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == _reference(reference, img, ["cat", "sky"])
    assert json.loads(png.headers["x-faseg-result"])["classes"] == ["cat", "sky"]


def test_concurrent_requests_are_batched_and_never_swapped(service, reference, one_thread):
    """Distinct images (and two vocabularies) at once: each answer is byte for byte its own
    image's single call, and the replica's stats show batches of more than one request."""
    vocab = [["cat", "sky"], ["dog", "grass", "car"]]
    imgs = [synthetic_image(40 + 8 * i, 32 + 4 * i, seed=200 + i) for i in range(MAX_BATCH)]
    before = requests.get(service.url + "/v1/stats", timeout=HTTP_TIMEOUT_S).json()
    for _ in range(3):  # bounded: a loaded machine may split one round over two batches
        with ThreadPoolExecutor(len(imgs)) as pool:
            answers = list(pool.map(lambda i: service.post(_png(imgs[i]), classes=",".join(vocab[i % 2])),
                                    range(len(imgs))))
        for i, r in enumerate(answers):
            assert r.status_code == 200, r.text
            assert base64.b64decode(r.json()["labels_png"]) == \
                _reference(reference, imgs[i], vocab[i % 2]), f"request {i}"
        stats = requests.get(service.url + "/v1/stats", timeout=HTTP_TIMEOUT_S).json()
        if stats["largest_batch"] > 1:
            break
    assert stats["requests"] > before["requests"] and stats["largest_batch"] > 1, stats
    assert stats["batching"] == "invariant"


@pytest.mark.parametrize("fields, image, status, message", [
    ({"classes": "cat,cat"}, "ok", 400, "appears twice"),
    ({"classes": ""}, "ok", 400, "class list is empty"),
    ({"classes": "cat", "threshold": "2"}, "ok", 400, "[0, 1]"),
    ({"classes": "cat"}, b"not an image at all", 400, "not an image"),
    ({"classes": "cat"}, "bomb", 400, "over the limit of"),
    ({"classes": "cat"}, "big", 413, "over the limit of"),
])
def test_bad_requests_get_one_line_errors_and_the_service_keeps_serving(service, fields, image,
                                                                         status, message):
    from test_reliability_inputs import png_bytes

    data = {"ok": _png(synthetic_image(32, 32, seed=5)), "bomb": png_bytes(12000, 12000, b"\0" * 10),
            "big": np.random.default_rng(0).bytes(MAX_MB * 2**20 + 1)}.get(image, image)
    r = service.post(data, **fields)
    assert r.status_code == status and set(r.json()) == {"error"}
    assert message in r.json()["error"] and "\n" not in r.json()["error"]
    assert requests.get(service.url + "/healthz", timeout=HTTP_TIMEOUT_S).status_code == 200


def test_not_multipart_is_a_400(service):
    r = requests.post(service.url + "/v1/segment", json={"classes": "cat"}, timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]


def test_a_client_that_hangs_up_does_not_poison_its_batch(service, reference, one_thread):
    imgs = [synthetic_image(48, 40, seed=300 + i) for i in range(3)]

    def hang_up():
        with pytest.raises(requests.exceptions.ReadTimeout):
            service.post(_png(synthetic_image(48, 40, seed=399)), classes="cat,sky", timeout=(10, 0.2))

    with ThreadPoolExecutor(4) as pool:
        gone = pool.submit(hang_up)
        answers = list(pool.map(lambda im: service.post(_png(im), classes="cat,sky"), imgs))
        gone.result()
    for im, r in zip(imgs, answers):
        assert r.status_code == 200, r.text
        assert base64.b64decode(r.json()["labels_png"]) == _reference(reference, im, ["cat", "sky"])


def _listening(pids) -> dict[int, set[str]]:
    """pid -> local addresses (hex, as /proc/net/tcp{,6} write them) of the TCP sockets that
    process listens on, for the processes `pids`."""
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[8:-1]] = pid
    out: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in owner:  # LISTEN
                out.setdefault(owner[f[9]], set()).add(f[1].split(":")[0])
    return out


#: 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp{,6} write them
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def test_every_port_the_service_and_its_ray_open_is_on_loopback(service):
    """The local Ray the command started (GCS, raylet, workers, dashboard agent, metrics
    endpoints) and the HTTP proxy listen on 127.0.0.1.  The one exception is Ray Serve's own:
    each replica's inter-deployment gRPC server, bound to [::] by Ray Serve itself, which the
    service's token authentication (RAY_AUTH_MODE=token) guards."""
    def name(pid: int) -> str:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()

    tree = descendants(service.proc.pid)
    bound = _listening(tree)
    assert bound
    for pid, addresses in bound.items():
        if not addresses <= LOOPBACK:
            assert name(pid).startswith("ray::ServeReplica") and len(addresses - LOOPBACK) == 1, \
                (name(pid), addresses)
    # the GCS started with the driver's settings (the driver's own environ is as it was at exec)
    gcs = next(pid for pid in tree if name(pid).endswith("gcs_server"))
    env = Path(f"/proc/{gcs}/environ").read_bytes().split(b"\0")
    assert b"RAY_AUTH_MODE=token" in env and b"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in env


def _health_latency(service) -> float:
    t0 = time.monotonic()
    r = requests.get(service.url + "/healthz", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return time.monotonic() - t0


def test_a_flood_gets_json_503s_while_health_answers_at_once(service):
    """Four times what the replica holds (uploads, two batches, the queue), released together:
    the rest are refused at once, as JSON with Retry-After; /healthz answers within 1 s meanwhile."""
    n = 4 * (2 * MAX_BATCH + MAX_QUEUED) + 8
    image = _png(synthetic_image(32, 32, seed=9))
    start = threading.Barrier(n + 1)

    def post(_):
        start.wait(timeout=HTTP_TIMEOUT_S)
        return service.post(image, classes="cat")

    with ThreadPoolExecutor(n) as pool:
        sent = [pool.submit(post, i) for i in range(n)]
        start.wait(timeout=HTTP_TIMEOUT_S)
        health = [_health_latency(service) for _ in range(5)]  # bounded: five probes
        answers = [f.result() for f in sent]
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 1, codes
    for r in answers:
        if r.status_code == 503:
            assert r.headers["content-type"] == "application/json" and set(r.json()) == {"error"}
            assert r.headers.get("retry-after", "").isdigit()
    assert max(health) < 1.0, health


def test_slow_clients_get_408_and_do_not_block_anyone(service):
    """24 connections send headers promising 5000 bytes, then a byte a second: /healthz and /
    answer within 1 s meanwhile, a normal request is served, each slow client gets a 408."""
    import socket

    host, port = "127.0.0.1", int(service.url.rsplit(":", 1)[1])
    head = (b"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 5000\r\n\r\n")
    slow = [socket.create_connection((host, port), timeout=30) for _ in range(24)]
    try:
        for c in slow:
            c.sendall(head)
        health, served = [], None
        for second in range(BODY_TIMEOUT_S - 1):  # bounded: shorter than the body deadline
            for c in slow:
                c.sendall(b"x")
            health.append(_health_latency(service))
            if served is None:
                served = service.post(_png(synthetic_image(32, 32, seed=2)), classes="cat")
            time.sleep(0.5)
        assert max(health) < 1.0 and served.status_code == 200, (health, served.text)
        statuses = [c.recv(200).split(b"\r\n")[0] for c in slow]
    finally:
        for c in slow:
            c.close()
    assert statuses == [b"HTTP/1.1 408 Request Timeout"] * len(slow)


def _replica_rss(service) -> int:
    """Resident bytes of the replica process (found by name among the service's processes)."""
    for pid in descendants(service.proc.pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("ray::ServeRepli"):
                fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
                return int(fields["VmRSS"].split()[0]) * 1024
        except (OSError, ValueError, KeyError):
            continue
    pytest.fail("no replica process found")


def test_pixel_bombs_are_refused_from_the_header_and_memory_stays_bounded(service):
    """1-bit PNGs of a few KB: over --max-pixels refused at once (no decoding), just under it
    served; four at once; the replica's RSS stays under its own before + the stated bound."""
    from faseg_rt.serve.settings import ServeSettings

    def bomb(width, height):
        buf = io.BytesIO()
        Image.new("1", (width, height)).save(buf, format="PNG")
        return buf.getvalue()

    bound = ServeSettings(model="m", max_batch_size=MAX_BATCH, max_queued=MAX_QUEUED,
                          max_request_mb=MAX_MB, max_pixels=MAX_PIXELS).memory_bound()["total"]
    before = _replica_rss(service)
    over = service.post(bomb(11585, 11585), classes="cat")
    assert over.status_code == 400 and f"over the limit of {MAX_PIXELS} pixels" in over.json()["error"]
    with ThreadPoolExecutor(4) as pool:
        under = list(pool.map(lambda _: service.post(bomb(2000, 1999), classes="cat"), range(4)))
    assert [r.status_code for r in under] == [200] * 4
    assert _replica_rss(service) < before + bound, (before, _replica_rss(service), bound)


def test_the_result_header_is_bounded_at_3000_classes(service):
    classes = json.dumps([f"c{i}" for i in range(MAX_CLASSES)])
    image = _png(synthetic_image(32, 32, seed=4))
    png = service.post(image, headers={"Accept": "image/png"}, classes=classes)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert "x-faseg-result" not in png.headers and "application/json" in png.headers["x-faseg-result-omitted"]
    assert service.post(image, classes=classes).json()["classes"] == json.loads(classes)
    over = service.post(image, classes=json.dumps([f"c{i}" for i in range(MAX_CLASSES + 1)]))
    assert over.status_code == 400 and "--max-classes" in over.json()["error"]


def test_caption_auto_without_a_captioner_names_the_flag(service):
    r = service.post(_png(synthetic_image(32, 32, seed=4)), classes="cat", caption="auto")
    assert r.status_code == 400 and "--captioner" in r.json()["error"]


def test_the_page_form_shows_an_overlay_in_a_headless_browser(service, tmp_path):
    driver = _chromium()
    photo = tmp_path / "photo.png"
    photo.write_bytes(_png(synthetic_image(64, 48, seed=11)))
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(service.url + "/")
        driver.find_element(By.ID, "image").send_keys(str(photo))
        driver.find_element(By.ID, "classes").send_keys("cat, sky, box")
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, HTTP_TIMEOUT_S).until(
            lambda d: d.find_element(By.ID, "status").get_attribute("data-done") == "1")
        status = driver.find_element(By.ID, "status")
        assert "error" not in (status.get_attribute("class") or ""), status.text
        canvas = driver.find_element(By.ID, "overlay")
        assert (canvas.get_attribute("width"), canvas.get_attribute("height")) == ("64", "48")
        legend = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#legend li")]
        labelled = int(canvas.get_attribute("data-labelled"))
        assert "64 x 48" in status.text
        assert all(t.split(" (")[0] in ("cat", "sky", "box") for t in legend)
        assert (labelled > 0) == bool(legend)  # the legend lists what the overlay coloured
    finally:
        driver.quit()


def _chromium():
    """A headless system Chromium via selenium, or a skip saying what is missing."""
    import shutil

    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("selenium is not installed (pip install selenium)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("no system Chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=DriverService(driver_path), options=opts)


def _stop_and_check(proc, tree, sig, log) -> None:
    """sig to the service's whole process group (what systemd and Ctrl-C do): exit 0 within
    30 s, and every process it started gone."""
    import os

    t0 = time.monotonic()
    os.killpg(proc.pid, sig)
    rc = proc.wait(timeout=60)
    took = time.monotonic() - t0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(alive(p) for p in tree):
        time.sleep(0.2)
    left = [p for p in tree if alive(p)]
    assert rc == 0 and took < 30 and not left, (rc, took, left, log.read_text(errors="replace")[-2000:])


def test_sigterm_to_the_group_with_requests_in_flight_stops_everything(service):
    """Last: SIGTERM to the process group while requests run; the service and every process it
    started (Ray's too) are gone within 30 s."""
    tree = set(service.tree) | set(descendants(service.proc.pid))
    assert len(tree) > 3  # the CLI, Ray's GCS and raylet, Serve's actors ...
    image = _png(synthetic_image(48, 40, seed=7))
    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(lambda: service.post(image, classes="cat", timeout=60))
        time.sleep(0.5)
        _stop_and_check(service.proc, tree, signal.SIGTERM, service.log)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(service.url + "/healthz", timeout=5)


def test_sigint_to_the_group_stops_a_fresh_service(tiny_model_dir, tmp_path):
    """Ctrl-C in a terminal: SIGINT to the foreground group (a service of its own)."""
    port, log = free_port(), tmp_path / "serve.log"
    cmd = cli_command("serve", "--model", str(tiny_model_dir), "--device", "cpu", "--port",
                      str(port), "--address", "local", "--num-threads", "1")
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=small_env(),
                            start_new_session=True)
    svc = Service(proc, port, log)
    try:
        _wait_ready(svc)
        _stop_and_check(proc, descendants(proc.pid), signal.SIGINT, log)
    finally:
        if proc.poll() is None:
            kill_tree(proc, signal.SIGKILL)
