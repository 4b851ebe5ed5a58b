"""The service's settings, checked once where the application is built (CLI, Python or a Serve
config file) so a bad value is one clear error before any replica starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from faseg_rt import rules
from faseg_rt.config import FASegConfig
from faseg_rt.errors import InvalidInputError


@dataclass(frozen=True)
class ServeSettings:
    """What each replica loads and how requests are batched and bounded.

    model / backend / device / dtype / engines / config / frontend: Segmenter.from_pretrained's
    arguments (frontend: its front-end keywords, e.g. captioner=..., recognizer=...).
    replicas: model copies (Serve replicas); max_batch_size: images per segment_batch call at
    most; batch_wait_ms: how long the first request of a batch waits for more; max_queued:
    requests waiting beyond the replicas' own before 503; max_request_mb: request body cap (413).
    num_threads: torch threads per replica (None: torch's default); num_cpus / num_gpus: the
    Ray resources of one replica.
    """

    model: str
    backend: str = "torch"
    device: str | None = None
    dtype: str | None = None
    engines: str | None = None
    config: FASegConfig | None = None
    frontend: dict = field(default_factory=dict)
    replicas: int = 1
    max_batch_size: int = 8
    batch_wait_ms: float = 50.0
    max_queued: int = 64
    max_request_mb: float = 32.0
    num_threads: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)

    @classmethod
    def make(cls, model, **kw) -> "ServeSettings":
        unknown = sorted(set(kw) - set(cls.__dataclass_fields__))
        if unknown:
            raise InvalidInputError(f"unknown service setting(s) {unknown}")
        if isinstance(model, (str, os.PathLike)) and Path(model).exists():
            from faseg_rt.model import check_model_dir

            check_model_dir(model)  # a bad local model fails here once, not in every replica
            model = str(Path(model).resolve())  # replicas may run in another directory
        elif not isinstance(model, str) or not model:
            raise InvalidInputError(f"model must be a directory or a hub id, got {model!r}")
        for name in ("replicas", "max_batch_size", "num_threads"):
            if kw.get(name) is not None:  # "4" from a Serve config file is 4
                kw[name] = rules.positive_int(_number(name, kw[name], int, 1), name)
        if kw.get("max_queued") is not None:
            kw["max_queued"] = _number("max_queued", kw["max_queued"], int, 0)
        if kw.get("dtype") is not None:  # the name travels; the replica makes the torch dtype
            rules.dtype(kw["dtype"])
            kw["dtype"] = str(kw["dtype"]).removeprefix("torch.")
        for name in ("batch_wait_ms", "max_request_mb", "num_cpus", "num_gpus"):
            if kw.get(name) is not None:
                kw[name] = _number(name, kw[name], float, 0)
        if kw.get("max_request_mb") == 0:
            raise InvalidInputError("max_request_mb must be above 0")
        if kw.get("engines") is not None:
            kw["engines"] = str(Path(kw["engines"]).resolve())
        kw = {k: v for k, v in kw.items() if v is not None}
        return cls(model=str(model), **kw)


def _number(name: str, value, kind, low):
    try:
        ok = not isinstance(value, bool) and kind(value) == float(value) if kind is int else True
        v = kind(value)
    except (TypeError, ValueError):
        ok = False
    if not ok or v != v or v < low:
        raise InvalidInputError(f"{name} must be {'an integer' if kind is int else 'a number'} "
                                f">= {low}, got {value!r}")
    return v
