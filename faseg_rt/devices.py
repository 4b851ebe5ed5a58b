"""Where and in which precision the networks run: one default for the segmenter and the front end.

The segmenter, the captioner and the recogniser share this rule so that a caller who names no
device gets all three models on the same one (a CUDA GPU when there is one) and no tensor has
to cross between devices inside a call.
"""

from __future__ import annotations

import torch

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError


def default_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """CUDA + fp16 when available, else CPU + fp32 (each overridable; dtype may be a name).

    device and dtype are checked by faseg_rt.rules (a device this machine has, a known dtype);
    here only the pairing: fp16 runs on CUDA only."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = rules.device(device)
    dtype = None if dtype is None else rules.dtype(dtype)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and dtype == torch.float16:
        raise InvalidInputError("float16 on the CPU is not supported; use dtype=torch.float32")
    return device, dtype
