"""Finding pretrained models (the SD model, the captioner, the recogniser) before loading them.

`locate` answers, in seconds and in one line, the question a bare `from_pretrained` answers after
minutes of retries: can this model be had here?  Order: a local directory; a hub id already in
the local Hugging Face cache (loaded from there, no network); a hub id the hub says exists and
may be downloaded (one request with a short timeout; `from_pretrained` then downloads it).
Anything else (no network, unknown id, gated repository, HF_HUB_OFFLINE set) raises
`ModelLoadError` naming the id and the fix.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable

from faseg_rt.errors import ModelLoadError

#: Seconds the one hub request may take before the model counts as unreachable.
PROBE_TIMEOUT_S = 8.0


def quiet_libraries() -> None:
    """Keep diffusers / transformers chatter (progress bars, info logs) off the terminal.

    Sets the environment variables the libraries read when they are imported, and quiets those
    already imported; it imports neither (the CLI calls it before it checks its arguments, and a
    usage error must not wait seconds for torch).  Loads also run under `quiet_loading`."""
    import sys

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("diffusers", "transformers"):
        lib = sys.modules.get(name)
        if lib is None:
            continue
        try:
            lib.utils.logging.set_verbosity_error()
            lib.utils.logging.disable_progress_bar()
        except Exception:  # pragma: no cover - logging tweaks never stop a load
            pass


@contextlib.contextmanager
def quiet_loading():
    """While loading: diffusers / transformers print errors only and no progress bars; the
    caller's settings come back afterwards (a library must not change them for good)."""
    import diffusers
    import transformers

    libs = [diffusers.utils.logging, transformers.utils.logging]
    saved = [(lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libs]
    for lib in libs:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, (verbosity, bars) in zip(libs, saved):
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()


def is_hub_id(model) -> bool:
    """'owner/name' (no leading '.', '/', '~', exactly one '/'): how the hub names repositories."""
    text = str(model)
    return (not os.path.isabs(text) and not text.startswith((".", "~")) and text.count("/") == 1
            and all(text.split("/")) and os.sep not in text.replace("/", ""))


def _fix(model: str) -> str:
    return (f"pass a local directory instead, or download it once where there is network with "
            f"`hf download {model} --local-dir DIR` (or copy ~/.cache/huggingface) and pass DIR")


def _has(root: Path, entry: str) -> bool:
    """Whether `root` holds `entry` (a folder when it ends with "/", else any path)."""
    return (root / entry).is_dir() if entry.endswith("/") else (root / entry).exists()


def locate(model, what: str = "model", required: Iterable[str] = ()) -> str:
    """A local directory holding `model`, or its hub id when the hub can serve it now.

    Args:
        model: a directory or a hub id 'owner/name'.
        what: what it is, for messages ("SD model", "captioner", "recogniser").
        required: paths a usable copy contains (a trailing "/" asks for a folder); a cached copy without them
            is not used (it was downloaded in part), and a local directory without them is refused.
    Raises:
        ModelLoadError: one line naming `model` and what to do.
    """
    text = str(model)
    required = tuple(required)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{what} {text} is a file; pass a model directory or a hub id 'owner/name'")
        missing = [r for r in required if not _has(path, r)]
        if missing:
            raise ModelLoadError(f"{what} directory {text} is incomplete: missing {', '.join(missing)} "
                                 f"(expected {', '.join(required)}); pass a directory saved with "
                                 "save_pretrained (or a hub id)")
        return str(path)
    if not is_hub_id(text):
        raise ModelLoadError(f"{what} {text} is neither an existing directory nor a hub id 'owner/name'")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        cached = Path(snapshot_download(text, local_files_only=True))
        if all(_has(cached, r) for r in required):
            return str(cached)
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(f"{what} {text} is not in the local Hugging Face cache and downloads are off "
                             f"(HF_HUB_OFFLINE is set): {_fix(text)}")
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(text, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        raise ModelLoadError(f"{what} {text} is gated: accept its terms at {constants.ENDPOINT}/{text} and "
                             f"log in with `hf auth login`, or {_fix(text)}") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"{what} {text} was not found on the Hugging Face hub (a typo, or a private "
                             f"repository: log in with `hf auth login`); check the id or {_fix(text)}") from None
    except Exception as e:  # no network, DNS, proxy, timeout, TLS: all mean "cannot download now"
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ModelLoadError(f"cannot download {what} {text}: the Hugging Face hub ({constants.ENDPOINT}) "
                             f"is unreachable ({reason}); {_fix(text)}") from None
    return text
