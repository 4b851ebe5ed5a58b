"""Finding and opening the front end's checkpoints (captioner, recogniser) with one-line errors.

Both take a hub id ("Salesforce/blip-image-captioning-large") or a local directory written by
`save_pretrained`; `checkpoint_dir` turns that into something `from_pretrained` can open through
faseg_rt.hub.locate (local directory, local cache, or a hub id that can be downloaded now; else
one line saying so), like the SD model.
"""

from __future__ import annotations

import os

from faseg_rt.errors import ModelLoadError
from faseg_rt.hub import locate, quiet_loading

#: Exceptions transformers raises for a missing, partial or foreign checkpoint.
LOAD_ERRORS = (OSError, ValueError, KeyError, EnvironmentError, ImportError)


def checkpoint_dir(id_or_dir: str | os.PathLike, what: str) -> str:
    """A local directory (or an id from_pretrained can open) for `id_or_dir`.

    what: a few words for error messages ("captioner", "recogniser").
    """
    return locate(os.fspath(id_or_dir), what, required=("config.json",))


def model_type(path: str, what: str, supported: dict[str, str]) -> str:
    """The checkpoint's `model_type` (from its config.json), refused unless in `supported`.

    supported: model_type -> the family name users see in messages (e.g. {"siglip": "SigLIP"}).
    """
    from transformers import AutoConfig

    try:
        with quiet_loading():
            config = AutoConfig.from_pretrained(path)
    except LOAD_ERRORS as e:
        raise ModelLoadError(f"cannot read the {what} config of {path}: {_one_line(e)}") from None
    kind = getattr(config, "model_type", None)
    if kind not in supported:
        names = ", ".join(f"{v} ({k})" for k, v in supported.items())
        raise ModelLoadError(f"{path} is a {kind!r} checkpoint; the {what} supports {names}")
    return kind


def load(cls, path: str, what: str, **kw):
    """cls.from_pretrained(path, **kw) with a one-line ModelLoadError on failure."""
    try:
        with quiet_loading():
            return cls.from_pretrained(path, **kw)
    except LOAD_ERRORS as e:
        raise ModelLoadError(f"cannot load the {what} from {path}: {_one_line(e)}") from None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__
