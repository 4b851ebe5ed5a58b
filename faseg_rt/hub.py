"""Finding and loading pretrained models (the SD model, the captioner, the recogniser) quietly.
"""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    """Keep diffusers / transformers chatter (accelerate hints, progress bars) off the terminal."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # pragma: no cover - logging tweaks never stop the CLI
        pass
