"""Where and in which precision the networks run: one default for the segmenter and the front end,
and what this machine's CPU offers for bf16.

The segmenter, the captioner and the recogniser share this rule so that a caller who names no
device gets all three models on the same one (a CUDA GPU when there is one) and no tensor has
to cross between devices inside a call.  The dtype a caller names (or "auto" resolves to) is
then split into one dtype per stage by faseg_rt.precision.
"""

from __future__ import annotations

import functools
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
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_bf16_instructions() else torch.float32


def resolve_auto(dtype, device=None, gpus: bool = False) -> str | None:
    """The dtype name a driver hands to every replica or worker: "auto" resolved here, once, for
    the device they will run on (`device`, else CUDA when they get GPUs, else the CPU), so a
    cluster of mixed nodes answers in one precision.  Any other name is checked and returned in
    canonical form; None stays None (each replica's device default, which does not depend on
    the node's CPU)."""
    if dtype is None:
        return None
    dtype = rules.dtype(dtype)
    if dtype == rules.AUTO:
        try:
            kind = torch.device(device).type if device is not None else ("cuda" if gpus else "cpu")
        except (RuntimeError, TypeError):
            raise InvalidInputError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
        dtype = auto_dtype(torch.device(kind))
    return str(dtype).removeprefix("torch.")


#: cpuinfo's flags of bf16 instructions, the faster first: AMX (a matrix unit: tiles) and
#: AVX-512 BF16 (vector instructions: bf16 dot products in the AVX-512 registers).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_bf16_flags() -> dict[str, bool]:
    """{flag: present} for each of BF16_FLAGS on this CPU; probed once per process."""
    caps = getattr(torch.cpu, "get_capabilities", lambda: {})()
    return {flag: bool(caps.get(flag)) for flag in BF16_FLAGS}


def cpu_bf16_instructions() -> str | None:
    """The best bf16 instructions this CPU has: 'amx_bf16', 'avx512_bf16', or None."""
    return next((flag for flag, present in cpu_bf16_flags().items() if present), None)


def check_device_dtype(device: torch.device, dtype: torch.dtype) -> None:
    """Refuse a pairing the device cannot run; one warning line on a CPU where bf16 is slow."""
    if device.type == "cpu" and dtype == torch.float16:
        raise InvalidInputError("float16 on the CPU is not supported; use dtype=torch.float32, or "
                                "torch.bfloat16 on a CPU with bf16 instructions (AMX, AVX-512 BF16)")
    if dtype != torch.bfloat16:
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidInputError(f"{torch.cuda.get_device_name(device)} has no bfloat16 support; use "
                                "dtype=torch.float16 (or float32)")
    if device.type == "cpu" and cpu_bf16_instructions() is None:
        warnings.warn("this CPU has no bf16 instructions (amx_bf16 / avx512_bf16): bfloat16 runs "
                      "emulated, slower than float32; dtype='auto' picks float32 here", stacklevel=3)
