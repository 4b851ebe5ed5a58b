"""The Ray Serve application: a FastAPI ingress over one Segmenter per replica.

    from faseg_rt.serve.app import build_app
    serve.run(build_app("XCLIU/2_rectified_flow_from_sd_1_5", max_batch_size=8), route_prefix="/")

or, from a Serve config file / `serve run`, the builder `faseg_rt.serve.app:app_builder` with
the same arguments as a dict (`serve run faseg_rt.serve.app:app_builder model=DIR`).

Routes (OpenAPI at /docs and /openapi.json): GET /healthz, POST /v1/segment, GET /v1/stats,
GET / (a page to try it).  A replica answers at once and loads its model in a thread, so
/healthz says 503 until the model is in memory (and /v1/segment too, with Retry-After).

Batching: POST /v1/segment checks the form and decodes the image in the request, then awaits
`_segment_many`, a `@serve.batch` method: Serve gathers up to max_batch_size requests arriving
within batch_wait_ms, and `faseg_rt.serve.batcher.run_batch` runs them, grouped by vocabulary,
on the replica's one model thread.  A request whose client goes away is cancelled while it waits
(Serve drops it from the batch) or its answer is dropped; the other requests of the batch are
unaffected.  Back-pressure is Serve's: each replica takes max_ongoing_requests (two batches, so
one can gather while one runs, plus a few light requests), and beyond max_queued waiting
requests the proxy answers 503 with Retry-After.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from ray.serve.config import BackpressureConfig

from faseg_rt.errors import InvalidInputError
from faseg_rt.serve.batcher import BatchStats, is_bad_input, run_batch
from faseg_rt.serve.http import RequestTooLarge, error, read_body, read_form, wants_png
from faseg_rt.serve.page import PAGE
from faseg_rt.serve.request import build_request
from faseg_rt.serve.settings import ServeSettings

#: Seconds a client is told to wait (Retry-After) when the queue is full or the model loads.
RETRY_AFTER_S = 1
#: The header carrying the JSON fields beside an image/png answer.
RESULT_HEADER = "X-FASeg-Result"

api = FastAPI(
    title="FA-Seg", version="1",
    description="Training-free open-vocabulary segmentation (FA-Seg) on one SD 1.5 model. "
                "POST an image and class names, get a label map: pixel value k is class k "
                "(1-based, in the order given), 0 is background.")

_FORM = {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image", "classes"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "the photo (any format PIL reads)"},
        "classes": {"type": "string", "description": "comma-separated names or a JSON list of strings"},
        "caption": {"type": "string", "description": "caption of the image, or 'auto' (BLIP)"},
        "candidates": {"type": "string",
                       "description": "'auto' (the classes the caption names plus the "
                                      "recogniser's), 'caption', 'recognizer', or a JSON list of "
                                      "names from classes; default: segment every class"},
        "threshold": {"type": "number", "minimum": 0, "maximum": 1,
                      "description": "background threshold (default 0.55)"}}}}}
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}}}}}
_ANSWER = {"description": "the label map and what produced it", "content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "classes": {"type": "array", "items": {"type": "string"}},
        "labels_png": {"type": "string", "format": "byte",
                       "description": "base64 of the label PNG `faseg-rt segment` writes"},
        "width": {"type": "integer"}, "height": {"type": "integer"},
        "caption": {"type": "string", "nullable": True},
        "candidates": {"type": "array", "items": {"type": "string"}},
        "sources": {"type": "object", "nullable": True,
                    "description": "per candidate: caption, recognizer or given"},
        "scores": {"type": "object", "nullable": True,
                   "description": "recogniser probability per class (null unless it ran)"}}}},
    "image/png": {"schema": {"type": "string", "format": "binary"},
                  "description": f"with Accept: image/png; the other fields in {RESULT_HEADER}"}}}
_SEGMENT_RESPONSES = {200: _ANSWER, 400: dict(_ERROR, description="bad input"),
                      413: dict(_ERROR, description="request over the size limit"),
                      503: dict(_ERROR, description="model loading or queue full (Retry-After)")}


@serve.deployment(name="FASegService")
@serve.ingress(api)
class FASegService:
    """One replica: a Segmenter loaded in the background and the routes over it."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.stats = BatchStats()
        self._seg = None
        self._load_error: str | None = None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faseg-model")
        self._segment_many.set_max_batch_size(settings.max_batch_size)
        self._segment_many.set_batch_wait_timeout_s(settings.batch_wait_ms / 1000.0)
        threading.Thread(target=self._load, name="faseg-load", daemon=True).start()

    def _load(self) -> None:
        try:
            self._model_thread.submit(self._load_on_model_thread).result()
        except Exception as e:
            self._load_error = f"{type(e).__name__}: {' '.join(str(e).split())}"

    def _load_on_model_thread(self) -> None:
        from faseg_rt.hub import quiet_libraries
        from faseg_rt.segmenter import Segmenter

        quiet_libraries()
        self._set_threads()
        s = self.settings
        self._seg = Segmenter.from_pretrained(s.model, backend=s.backend, device=s.device,
                                              dtype=s.dtype, engines=s.engines, config=s.config,
                                              **s.frontend)

    def _set_threads(self) -> None:
        from faseg_rt.threads import apply

        apply(self.settings.num_threads)  # None: this replica's Ray CPUs (faseg_rt/threads.py)

    def load_state(self) -> dict:
        """{"loaded": bool, "error": str | None}: for the CLI waiting on the replicas."""
        return {"loaded": self._seg is not None, "error": self._load_error}

    def _health(self) -> dict:
        seg = self._seg
        return {"status": "ok", "model": self.settings.model, "backend": self.settings.backend,
                "device": str(seg.device), "dtype": str(seg.dtype).replace("torch.", "")}

    def _not_ready(self) -> JSONResponse:
        if self._load_error:
            return error(503, f"the model failed to load: {self._load_error}")
        return error(503, "the model is loading; retry shortly",
                     headers={"Retry-After": str(RETRY_AFTER_S)})

    @api.get("/healthz", summary="200 once the model is loaded, 503 before (or if it failed)")
    def healthz(self):
        if self._seg is None:
            return self._not_ready()
        return self._health()

    @api.get("/v1/stats", summary="this replica's batches: how many, of which sizes")
    def batch_stats(self):
        return self.stats.snapshot()

    @api.get("/", response_class=HTMLResponse, summary="a page to try the service")
    def page(self):
        return HTMLResponse(PAGE)

    @api.post("/v1/segment", summary="segment one image into the given classes",
              openapi_extra={"requestBody": {"required": True, "content": _FORM}},
              responses=_SEGMENT_RESPONSES)
    async def segment(self, request: Request):
        try:
            body = await read_body(request, self.settings.max_request_bytes)
            image, fields = await read_form(request, body)
            del body
            item = await asyncio.to_thread(build_request, image, fields)  # decoding: off the loop
        except RequestTooLarge as e:
            return error(413, str(e))
        except InvalidInputError as e:
            return error(400, str(e))
        if self._seg is None:
            return self._not_ready()
        out = await self._segment_many(item)
        if isinstance(out, Exception):
            if is_bad_input(out):
                return error(400, str(out))
            return error(500, f"internal error: {type(out).__name__}: {out}")
        if wants_png(request):
            return Response(out.png, media_type="image/png", headers={RESULT_HEADER: out.header()})
        return JSONResponse(out.json())

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
    arguments: the fields of ServeSettings (backend, device, dtype, engines, config, frontend,
    replicas, max_batch_size, batch_wait_ms, max_queued, max_request_mb, num_threads, num_cpus,
    num_gpus).  Checked here: a bad value raises InvalidInputError before anything deploys."""
    s = ServeSettings.make(model, **kw)
    options = dict(num_replicas=s.replicas, max_ongoing_requests=2 * s.max_batch_size + 4,
                   max_queued_requests=s.max_queued,
                   backpressure_config=BackpressureConfig(retry_after_s=RETRY_AFTER_S),
                   ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus})
    return FASegService.options(**options).bind(s)


def app_builder(args: dict) -> serve.Application:
    """Serve's application-builder form of build_app (`serve run` / a Serve config file)."""
    args = dict(args)
    if "model" not in args:
        raise InvalidInputError("give the model: model=ID_OR_DIR")
    return build_app(args.pop("model"), **args)
