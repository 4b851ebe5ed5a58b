"""Where and in which precision the networks run: one default for the segmenter and the front end.

The segmenter, the captioner and the recogniser share this rule so that a caller who names no
device gets all three models on the same one (a CUDA GPU when there is one) and no tensor has
to cross between devices inside a call.
"""

from __future__ import annotations

import torch

from .errors import InvalidInputError

_DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                "fp16": torch.float16, "half": torch.float16, "float": torch.float32,
                "float64": torch.float64, "fp64": torch.float64, "double": torch.float64}


def default_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """CUDA + fp16 when available, else CPU + fp32 (each overridable; dtype may be a name)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInputError(f"unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:1'") from None
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") not in _DTYPE_NAMES:
            raise InvalidInputError(f"unknown dtype {dtype!r}; use float32 or float16")
        dtype = _DTYPE_NAMES[dtype.removeprefix("torch.")]
    if dtype is not None and dtype not in (torch.float32, torch.float16, torch.float64):
        raise InvalidInputError(f"dtype must be torch.float32 or torch.float16 (float64 for checks), "
                                f"got {dtype!r}")
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and dtype == torch.float16:
        raise InvalidInputError("float16 on the CPU is not supported; use dtype=torch.float32")
    return device, dtype
