"""The service's settings: every default written once (the CLI's flags read them from here),
checked once through faseg_rt.rules where the application is built (CLI, Python or a Serve
config file), so a bad value is one clear error before any replica starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from faseg_rt import rules
from faseg_rt.config import FASegConfig
from faseg_rt.errors import InvalidInputError

#: Requests per replica that may be reading their bodies at once (each for at most
#: body_timeout_s, each at most max_request_mb); one more is answered 503 at once.
UPLOAD_SLOTS = 32
#: Requests per replica for the light routes (/healthz, /readyz, /, /docs, /v1/stats) on top
#: of the segmentation slots, so they never wait behind segmentation.
LIGHT_SLOTS = 64
#: Bytes of working memory per pixel of an image being segmented beyond its decoded RGB
#: (int64 + int32 label maps and the PNG being written), for the memory bound.
LABEL_BYTES_PER_PIXEL = 13

#: The numeric settings: name -> (int or float, lowest value), checked by rules.number.
NUMBERS = {"replicas": (int, 1), "max_batch_size": (int, 1), "num_threads": (int, 1),
            "max_queued": (int, 0), "max_pixels": (int, 1), "max_classes": (int, 1),
            "batch_wait_ms": (float, 0), "max_request_mb": (float, 0.01),
            "body_timeout_s": (float, 0.1), "num_cpus": (float, 0), "num_gpus": (float, 0)}


@dataclass(frozen=True)
class ServeSettings:
    """What each replica loads and how requests are batched and bounded.

    model / backend / device / dtype / engines / config / frontend: Segmenter.from_pretrained's
    arguments (frontend: its front-end keywords; the service loads a captioner / recogniser
    at start only when one is named here, and refuses caption=auto / candidates that need a
    missing one with 400).
    replicas: model copies (Serve replicas); max_batch_size: images per segment_batch call at
    most; batch_wait_ms: how long the first request of a batch waits for more; max_queued:
    checked requests waiting beyond the two batches a replica holds, then 503.
    Limits, checked before any work: max_request_mb (body, 413), body_timeout_s (the whole body
    must arrive within it, else 408), max_pixels (from the image header, before decoding, 400),
    max_classes (per request, before any model runs, 400).
    batching: "invariant" (every answer byte-identical to a single Segmenter call, whatever
    shares its batch: each image runs alone through the networks) or "shared" (a batch's
    images share network passes: faster where batching pays, answers may differ from single
    calls in a few pixels); faseg_rt.rules.BATCHING.
    num_threads: torch threads per replica (None: torch's default); num_cpus / num_gpus: the
    Ray resources of one replica.
    """

    model: str
    backend: str = "torch"
    device: str | None = None
    dtype: str | None = None
    engines: str | None = None
    config: FASegConfig | None = None
    frontend: dict = field(default_factory=lambda: _frontend({}))
    replicas: int = 1
    max_batch_size: int = 8
    batch_wait_ms: float = 50.0
    max_queued: int = 64
    max_request_mb: float = 32.0
    body_timeout_s: float = 30.0
    max_pixels: int = 4096 * 4096  # a 16-megapixel photo; the memory bound (docs) scales with it
    max_classes: int = 1024
    batching: str = "invariant"
    num_threads: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    @property
    def batch_invariant(self) -> bool:
        return self.batching == "invariant"

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)

    @property
    def model_slots(self) -> int:
        """Checked requests a replica holds: one batch running, one gathering, max_queued waiting."""
        return 2 * self.max_batch_size + self.max_queued

    @property
    def ongoing(self) -> int:
        """Serve's max_ongoing_requests per replica: uploads + checked requests + light routes."""
        return UPLOAD_SLOTS + self.model_slots + LIGHT_SLOTS

    def memory_bound(self) -> dict:
        """Bytes of request data a replica can hold at once, beyond its model (docs/serving.md):
        bodies being read or queued (compressed), images decoded (at most two batches), and the
        label maps of the running batch."""
        bodies = (UPLOAD_SLOTS + self.model_slots) * self.max_request_bytes
        decoded = 2 * self.max_batch_size * 3 * self.max_pixels
        labels = self.max_batch_size * LABEL_BYTES_PER_PIXEL * self.max_pixels
        return {"bodies": bodies, "decoded": decoded, "labels": labels,
                "total": bodies + decoded + labels}

    @classmethod
    def default(cls, name: str):
        """The default of one setting (the CLI's flags show and use these)."""
        return cls.__dataclass_fields__[name].default

    @classmethod
    def make(cls, model, **kw) -> "ServeSettings":
        unknown = sorted(set(kw) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidInputError(f"unknown service setting(s) {unknown}; the settings are "
                                    f"{[f.name for f in fields(cls)][1:]}")
        if isinstance(model, (str, os.PathLike)) and Path(model).exists():
            from faseg_rt.model import check_model_dir

            check_model_dir(model)  # a bad local model fails here once, not in every replica
            model = str(Path(model).resolve())  # replicas may run in another directory
        elif not isinstance(model, str) or not model:
            raise InvalidInputError(f"model must be a directory or a hub id, got {model!r}")
        for name, (kind, low) in NUMBERS.items():
            if kw.get(name) is not None:  # "4" from a Serve config file is 4
                kw[name] = rules.number(kw[name], name, low, integer=kind is int)
        if kw.get("dtype") is not None:  # a name travels (the replica makes the torch dtype);
            from faseg_rt.devices import resolve_auto  # "auto" resolved here, once, for all replicas

            kw["dtype"] = resolve_auto(kw["dtype"], kw.get("device"), gpus=bool(kw.get("num_gpus")))
        if kw.get("engines") is not None:
            kw["engines"] = str(Path(kw["engines"]).resolve())
        if kw.get("batching") is not None:  # its name travels, as the CLI and stats spell it
            kw["batching"] = "invariant" if rules.batching(kw["batching"]) else "shared"
        if kw.get("frontend") is not None:
            kw["frontend"] = _frontend(kw["frontend"])
        kw = {k: v for k, v in kw.items() if v is not None}
        return cls(model=str(model), **kw)

    def public_model(self) -> str:
        """The model as clients see it: a hub id, or a local directory's name (never its path)."""
        return Path(self.model).name if os.path.isabs(self.model) else self.model


def _frontend(front) -> dict:
    """The front-end keywords; captioner / recognizer are None unless named (the service never
    loads a default model on a request's behalf)."""
    if not isinstance(front, dict):
        raise InvalidInputError(f"frontend must be a dict of front-end settings, got {type(front).__name__}")
    return {"captioner": None, "recognizer": None, **front}
