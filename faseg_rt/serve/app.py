"""The Ray Serve application: a FastAPI ingress over one Segmenter per replica.

    from faseg_rt.serve.app import build_app
    serve.run(build_app("XCLIU/2_rectified_flow_from_sd_1_5", max_batch_size=8), route_prefix="/")

or, from a Serve config file / `serve run`, the builder `faseg_rt.serve.app:app_builder` with
the same arguments as a dict (`serve run faseg_rt.serve.app:app_builder model=DIR`).

Routes (OpenAPI at /openapi.json, a local page for it at /docs): GET /healthz (liveness),
GET /readyz (readiness), POST /v1/segment, GET /v1/stats, GET / (a page to try it).  A replica
answers at once and loads its model (and the front-end models it is given) in a thread:
/healthz is 200 while it loads, /readyz and /v1/segment 503 with Retry-After until it is ready.

A request to POST /v1/segment goes through, in order, each refused before any work follows:
an upload slot (UPLOAD_SLOTS per replica; 503), its body within --body-timeout (408) and
--max-request-mb (413), the form, classes (--max-classes), the front-end models it needs and
the image header (--max-pixels) (400), a place among the replica's checked requests
(settings.model_slots: 503 + Retry-After, JSON like every error), then one of two batches'
worth of decoding slots, the decoding and `_segment_many`, a `@serve.batch` method that runs
Serve's dynamic batch through `faseg_rt.serve.batcher.run_batch` on the one model thread.
The light routes never take those slots, and Serve's own per-replica cap
(settings.ongoing) sits above all of them, so health answers while segmentation is saturated.
The memory this bounds is settings.memory_bound() (docs/serving.md).
"""

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.config import BackpressureConfig

from faseg_rt.errors import InvalidInputError
from faseg_rt.serve.batcher import BatchStats, is_bad_input, is_overloaded, run_batch
from faseg_rt.serve.http import BodyTimeout, RequestTooLarge, error, read_body, read_form, wants_png
from faseg_rt.serve.openapi import FORM, OMITTED_HEADER, RESULT_HEADER, SEGMENT_RESPONSES
from faseg_rt.serve.page import DOCS_PAGE, PAGE
from faseg_rt.serve.request import MAX_HEADER_BYTES, Limits, check_request, decode_request
from faseg_rt.serve.settings import UPLOAD_SLOTS, ServeSettings

log = logging.getLogger("faseg_rt.serve")
#: Seconds a client is told to wait (Retry-After) when the queue is full or the model loads.
RETRY_AFTER_S = 1
_BUSY = {"Retry-After": str(RETRY_AFTER_S)}

api = FastAPI(
    title="FA-Seg", version="1", docs_url=None, redoc_url=None,
    description="Training-free open-vocabulary segmentation (FA-Seg) on one SD 1.5 model. "
                "POST an image and class names, get a label map: pixel value k is class k "
                "(1-based, in the order given), 0 is background.")


@serve.deployment(name="FASegService")
@serve.ingress(api)
class FASegService:
    """One replica: a Segmenter loaded in the background and the routes over it."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.stats = BatchStats()
        self._seg = None
        self._load_error: str | None = None
        self._uploads = self._admitted = 0
        self._decode_slots = asyncio.Semaphore(2 * settings.max_batch_size)
        self._limits = Limits(settings.max_pixels, settings.max_classes,
                              bool(settings.frontend.get("captioner")),
                              bool(settings.frontend.get("recognizer")))
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faseg-model")
        self._segment_many.set_max_batch_size(settings.max_batch_size)
        self._segment_many.set_batch_wait_timeout_s(settings.batch_wait_ms / 1000.0)
        threading.Thread(target=self._load, name="faseg-load", daemon=True).start()

    def _load(self) -> None:
        try:
            self._model_thread.submit(self._load_on_model_thread).result()
        except Exception as e:
            self._load_error = f"{type(e).__name__}: {' '.join(str(e).split())}"
            log.error("faseg-rt serve: the model failed to load: %s", self._load_error)

    def _load_on_model_thread(self) -> None:
        from faseg_rt.hub import quiet_libraries
        from faseg_rt.segmenter import Segmenter

        quiet_libraries()
        self._set_threads()
        s = self.settings
        seg = Segmenter.from_pretrained(s.model, backend=s.backend, device=s.device, dtype=s.dtype,
                                        engines=s.engines, config=s.config,
                                        batch_invariant=s.batch_invariant, **s.frontend)
        for what in ("captioner", "recognizer"):  # at start, never on a request's behalf
            if s.frontend.get(what):
                getattr(seg.frontend, what)(seg.device, seg.precision[what])
        self._seg = seg

    def _set_threads(self) -> None:
        from faseg_rt.threads import apply

        apply(self.settings.num_threads)  # None: this replica's Ray CPUs (faseg_rt/threads.py)

    def load_state(self) -> dict:
        """{"loaded", "error", "replica"}: for the CLI waiting on every replica."""
        return {"loaded": self._seg is not None, "error": self._load_error,
                "replica": serve.get_replica_context().replica_tag}

    def _status(self) -> dict:
        s, seg = self.settings, self._seg
        out = {"status": "ok" if seg is not None else "loading", "model": s.public_model(),
               "backend": s.backend}
        if seg is not None:
            out.update(device=str(seg.device), dtype=seg.precision.name, precision=seg.precision.names())
        return out

    def _not_ready(self) -> JSONResponse:
        if self._load_error:
            return error(503, f"the model failed to load: {self._load_error.split(': ', 1)[-1]}")
        return error(503, "the model is loading; retry shortly", headers=_BUSY)

    @api.get("/healthz", summary="liveness: 200 while the replica loads or serves, 503 if its "
                                 "model failed to load; never waits behind segmentation")
    async def healthz(self):
        if self._load_error:
            return self._not_ready()
        return self._status()

    @api.get("/readyz", summary="readiness: 200 once the model is loaded, 503 before")
    async def readyz(self):
        if self._seg is None:
            return self._not_ready()
        return self._status()

    @api.get("/v1/stats", summary="this replica's batches: how many, of which sizes")
    async def batch_stats(self):
        return dict(self.stats.snapshot(), uploads=self._uploads, admitted=self._admitted,
                    batching=self.settings.batching)

    @api.get("/", response_class=HTMLResponse, summary="a page to try the service")
    async def page(self):
        return HTMLResponse(PAGE)

    @api.get("/docs", response_class=HTMLResponse, summary="the API, from /openapi.json (offline)")
    async def docs(self):
        return HTMLResponse(DOCS_PAGE)

    @api.post("/v1/segment", summary="segment one image into the given classes",
              openapi_extra={"requestBody": {"required": True, "content": FORM}},
              responses=SEGMENT_RESPONSES)
    async def segment(self, request: Request):
        if self._uploads >= UPLOAD_SLOTS:
            return error(503, f"{UPLOAD_SLOTS} uploads are already arriving; retry shortly",
                         headers=_BUSY)
        self._uploads += 1
        try:
            item = await self._read(request)
        except BodyTimeout as e:
            return error(408, str(e), headers={"Connection": "close"})
        except RequestTooLarge as e:
            return error(413, str(e))
        except InvalidInputError as e:
            return error(400, str(e))
        finally:
            self._uploads -= 1
        if self._seg is None:
            return self._not_ready()
        if self._admitted >= self.settings.model_slots:
            return error(503, f"the service is busy ({self._admitted} requests queued); retry "
                              f"shortly", headers=_BUSY)
        self._admitted += 1
        try:
            async with self._decode_slots:
                try:
                    item = await asyncio.to_thread(decode_request, item)
                except InvalidInputError as e:
                    return error(400, str(e))
                out = await self._segment_many(item)
        finally:
            self._admitted -= 1
        return self._answer(request, out)

    async def _read(self, request: Request):
        """The checked request, image still encoded (body deadline and every cap first)."""
        s = self.settings
        body = await read_body(request, s.max_request_bytes, s.body_timeout_s)
        image, fields = await read_form(request, body)
        del body
        return await asyncio.to_thread(check_request, image, fields, self._limits)

    def _answer(self, request: Request, out):
        if isinstance(out, Exception):
            if is_bad_input(out):
                return error(400, str(out))
            if is_overloaded(out):
                return error(503, "the replica ran out of memory on this batch; retry shortly",
                             headers=_BUSY)
            log.error("faseg-rt serve: a batch failed: %s: %s", type(out).__name__, out)
            return error(500, "internal error while segmenting; the service log has the details")
        if not wants_png(request):
            return JSONResponse(out.json())
        header = out.header()
        if header is None:
            headers = {OMITTED_HEADER: f"the fields are over {MAX_HEADER_BYTES} bytes; ask with "
                                       f"Accept: application/json to get them"}
        else:
            headers = {RESULT_HEADER: header}
        return Response(out.png, media_type="image/png", headers=headers)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _segment_many(self, items):
        """Serve's dynamic batch (sizes set from the settings in __init__): one model thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model_thread, self._run, items)

    def _run(self, items):
        self._set_threads()
        return run_batch(self._seg, items, self.stats)


def build_app(model, **kw) -> serve.Application:
    """The Serve application for `model` (a diffusers SD 1.x directory or hub id); keyword
    arguments: the fields of ServeSettings.  Checked here: a bad value raises
    InvalidInputError before anything deploys."""
    s = ServeSettings.make(model, **kw)
    options = dict(num_replicas=s.replicas, max_ongoing_requests=s.ongoing,
                   max_queued_requests=s.ongoing,
                   backpressure_config=BackpressureConfig(retry_after_s=RETRY_AFTER_S),
                   ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus})
    return FASegService.options(**options).bind(s)


def app_builder(args: dict) -> serve.Application:
    """Serve's application-builder form of build_app (`serve run` / a Serve config file)."""
    args = dict(args)
    if "model" not in args:
        raise InvalidInputError("give the model: model=ID_OR_DIR")
    return build_app(args.pop("model"), **args)
