"""Where and in which precision the networks run: one default for the segmenter and the front end.

The segmenter, the captioner and the recogniser share this rule so that a caller who names no
device gets all three models on the same one (a CUDA GPU when there is one) and no tensor has
to cross between devices inside a call.
"""

from __future__ import annotations

import warnings

import torch

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError


def default_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """CUDA + fp16 when available, else CPU + fp32 (each overridable; dtype may be a name).

    device and dtype are checked by faseg_rt.rules (a device this machine has, a known dtype);
    here the pairing (check_device_dtype) and "auto" (auto_dtype)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = rules.device(device)
    dtype = None if dtype is None else rules.dtype(dtype)
    if dtype == rules.AUTO:
        dtype = auto_dtype(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    check_device_dtype(device, dtype)
    return device, dtype


def auto_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA; bf16 on a CPU with bf16 instructions (AMX or AVX-512 BF16: faster networks
    there, labels equal to fp32's but for near-ties; benchmarks/README.md "Precision policy");
    fp32 on other CPUs."""
    from faseg_rt.precision import cpu_bf16_units

    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_bf16_units() else torch.float32


def check_device_dtype(device: torch.device, dtype: torch.dtype) -> None:
    """Refuse a pairing the device cannot run; one warning line on a CPU where bf16 is slow."""
    from faseg_rt.precision import cpu_bf16_units

    if device.type == "cpu" and dtype == torch.float16:
        raise InvalidInputError("float16 on the CPU is not supported; use dtype=torch.float32, or "
                                "torch.bfloat16 on a CPU with bf16 instructions (AMX, AVX-512 BF16)")
    if dtype != torch.bfloat16:
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidInputError(f"{torch.cuda.get_device_name(device)} has no bfloat16 support; use "
                                "dtype=torch.float16 (or float32)")
    if device.type == "cpu" and cpu_bf16_units() is None:
        warnings.warn("this CPU has no bf16 instructions (amx_bf16 / avx512_bf16): bfloat16 runs "
                      "emulated, slower than float32; dtype='auto' picks float32 here", stacklevel=3)
