"""Input rules: every check on a caller's value, written once.

The Python API (Segmenter, FrontEnd, Recognizer, Captioner), the CLI, eval and label all check
their inputs here, so one value is accepted or refused the same way everywhere and the command
line's choices cannot drift from what the library takes.

Each rule takes the value as the caller gave it and returns it in canonical form, or raises
InvalidInputError with one line that names the parameter, what was given and what is allowed:

    threshold(value, name="threshold") -> float    a number in [0, 1]; bools, NaN, strings refused
    positive_int(value, name) -> int                an int (or numpy int) >= 1; bools refused
    number(value, name, low, integer=False)         a finite real (int / float / numpy scalar, or
                                                    its text from a config file) >= low; bools,
                                                    NaN and inf refused
    normalize_classes(value) -> tuple[str, ...]     a non-empty list of unique (case-insensitive),
                                                    non-empty names, inner whitespace collapsed
    batch_size(value) -> int                        positive_int named "batch_size"
    batching(value) -> bool                         True (batch-invariant) for "invariant" or
                                                    True, False for "shared" or False
    max_candidates(value) -> int                    positive_int named "max_candidates"
    threads(value) -> int                           positive_int named "threads" (torch's intra-op
                                                    threads; faseg_rt.threads decides without it)
    dtype(value) -> torch.dtype | "auto"            a torch.dtype, a name of DTYPE_NAMES, or "auto"
    device(value) -> torch.device                   "cpu" or a CUDA device this machine has
                                                    (available_devices() lists them); the API
                                                    checks it before any model loads
    candidate_mode(value) -> str | None             a candidates mode of CANDIDATE_MODES (or an
                                                    alias: "recogniser") in canonical form; None
                                                    for any other value
    did_you_mean(value, known) -> str               "; did you mean 'x'?" for a near miss, or ""

Tables: DTYPE_NAMES (every accepted dtype name -> torch dtype), CLI_DTYPES (the precisions the
command line offers) and DTYPE_CHOICES (the argparse choices of every --dtype flag).

Messages name parameters as the Python API spells them, never a command-line flag: the CLI
parses text (float(text), int(text)) and hands the result to the same rule (cli/args.py), and
reports the one line as its usage error.

Extending: a new rule is a function here returning the canonical value, with a test in
tests/test_rules.py; keep this module low in the layering (it imports only numpy and faseg_rt.errors at
load, torch inside the rules that need it) so any layer may use it and a command line checks
its arguments without importing torch.  A new precision (float8, say) is one row of _DTYPES
(its names reach DTYPE_NAMES, and DTYPE_CHOICES once the dtype is in CLI_DTYPES), a column of
the stage table in faseg_rt.precision (an entry in every row of TABLE), the device / precision pairing in
faseg_rt.devices.check_device_dtype (which refuses float16 on the CPU, and bfloat16 on a GPU
without it) and each exported backend's own precision check.
"""

from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING

import numpy as np

from faseg_rt.errors import InvalidInputError

if TYPE_CHECKING:  # torch is imported inside the rules that need it, never at load
    import torch

#: (torch dtype's name, short name, long name, other accepted names); the first row is the CPU
#: default.  Names, not torch dtypes, so that importing the rules (every command line does,
#: before it checks its arguments) does not import torch: DTYPE_NAMES and CLI_DTYPES, which
#: hold torch dtypes, are built on first use (module __getattr__).
_DTYPES = (
    ("float32", "fp32", "float32", ("float",)),
    ("float16", "fp16", "float16", ("half",)),
    ("float64", "fp64", "float64", ("double",)),
    ("bfloat16", "bf16", "bfloat16", ()),
)

#: The name that lets the device pick: bf16 on a CPU with bf16 instructions, else fp32; fp16 on
#: CUDA (faseg_rt.devices.auto_dtype).
AUTO = "auto"

#: The precisions the command line offers (float64 serves parity checks from Python), by name.
_CLI_DTYPE_NAMES = ("float32", "float16", "bfloat16")

#: argparse choices of every --dtype flag: the short and long name of each CLI dtype, and "auto".
DTYPE_CHOICES: tuple[str, ...] = tuple(
    name for dt, short, long, _ in _DTYPES if dt in _CLI_DTYPE_NAMES for name in (short, long)) + (AUTO,)


def __getattr__(name: str):
    """DTYPE_NAMES (every accepted dtype name, also with a "torch." prefix, -> its torch dtype)
    and CLI_DTYPES (the torch dtypes the command line offers), built when first read."""
    if name not in ("DTYPE_NAMES", "CLI_DTYPES"):  # e.g. an introspecting tool: no torch import
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import torch

    if name == "DTYPE_NAMES":
        return {n: getattr(torch, dt) for dt, short, long, other in _DTYPES for n in (short, long, *other)}
    return tuple(getattr(torch, dt) for dt in _CLI_DTYPE_NAMES)


#: The candidates modes (faseg_rt.frontend.candidates says what each does), and the other
#: spellings taken for them (README prose writes the British "recogniser").
CANDIDATE_MODES = ("auto", "caption", "recognizer")
CANDIDATE_MODE_ALIASES = {"recogniser": "recognizer"}


def candidate_mode(value) -> str | None:
    """The canonical mode a string names ("recogniser" -> "recognizer"), or None if it names none."""
    if not isinstance(value, str):
        return None
    value = CANDIDATE_MODE_ALIASES.get(value, value)
    return value if value in CANDIDATE_MODES else None


def modes_text(extra: tuple[str, ...] = ()) -> str:
    """"'auto', 'caption' or 'recognizer'": the modes as every message lists them."""
    names = [repr(m) for m in (*CANDIDATE_MODES, *extra)]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def did_you_mean(value, known) -> str:
    """"; did you mean 'x'?" when `value` is a near miss of one of `known` (difflib), else ""."""
    lower = {str(k).lower(): k for k in known}  # case-blind; the answer as `known` spells it
    close = difflib.get_close_matches(str(value).lower(), list(lower), n=1, cutoff=0.6)
    return f"; did you mean {lower[close[0]]!r}?" if close else ""


def threshold(value, name: str = "threshold") -> float:
    """A probability cut: a real number in [0, 1] (int, float or numpy scalar), as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidInputError(f"{name} must be a number in [0, 1], got {value!r}")
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must lie in [0, 1], got {value}")
    return value


def positive_int(value, name: str) -> int:
    """A count: an int (or numpy integer) >= 1, as an int; True / 1.0 / "2" are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def number(value, name: str, low: float = 0, integer: bool = False):
    """A finite number >= low (an int when `integer`): int, float, numpy scalar or its text
    ("4" from a config file); True, NaN, inf and 1.5 for an integer are refused."""
    kind = "an integer" if integer else "a finite number"
    v = None
    if not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, str, np.integer, np.floating)):
        try:
            v = float(value)
        except ValueError:
            v = None
    if v is None or not math.isfinite(v) or (integer and v != int(v)) or v < low:
        raise InvalidInputError(f"{name} must be {kind} >= {low:g}, got {value!r}")
    return int(v) if integer else v


def batch_size(value) -> int:
    """Images (or prompts) per network call."""
    return positive_int(value, "batch_size")


#: How a batch of images runs (segment_batch, label, serve): "invariant" (the default) runs each
#: image alone through the networks, so its answer is byte-identical to a single call's whatever
#: shares the batch; "shared" shares the network passes among the batch's images (faster on a
#: GPU, but a batched matrix product may round differently, so answers can differ from single
#: calls in a few pixels: benchmarks/README.md measures how many).
BATCHING = ("invariant", "shared")


def batching(value) -> bool:
    """batch_invariant from "invariant" / "shared" (or the bool itself)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value in BATCHING:
        return value == "invariant"
    raise InvalidInputError(f"batching must be one of {list(BATCHING)} (or batch_invariant True / "
                            f"False), got {value!r}{did_you_mean(value, BATCHING)}")


def max_candidates(value) -> int:
    """The most classes the recogniser keeps per image."""
    return positive_int(value, "max_candidates")


def threads(value) -> int:
    """An explicit count of torch's intra-op threads (threads= / --threads)."""
    return positive_int(value, "threads")


def dtype(value) -> "torch.dtype | str":
    """A torch float dtype from a torch.dtype or a name ("fp16", "float16", "torch.float16"), or
    AUTO ("auto"), which faseg_rt.devices resolves for the device."""
    import torch

    table = __getattr__("DTYPE_NAMES")
    if isinstance(value, torch.dtype):
        if value in table.values():
            return value
    elif value == AUTO:
        return AUTO
    elif isinstance(value, str) and value.removeprefix("torch.") in table:
        return table[value.removeprefix("torch.")]
    names = ", ".join([n for dt, short, long, _ in _DTYPES for n in (short, long)] + [AUTO])
    raise InvalidInputError(f"unknown dtype {value!r}; use one of {names} (or a torch.dtype of those)")


def available_devices() -> list[str]:
    """The devices this process can run on: "cpu" and one "cuda:i" per visible GPU."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu"] + [f"cuda:{i}" for i in range(count)]


def device(value) -> "torch.device":
    """A torch.device this machine has: "cpu", "cuda" / "cuda:i" with that GPU present."""
    import torch

    have = available_devices()
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError):
        raise InvalidInputError(f"unknown device {value!r}; available: {', '.join(have)}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise InvalidInputError(f"device {value!r} is not supported; available: {', '.join(have)}")
    if len(have) == 1:
        raise InvalidInputError(f"device {value!r} needs a CUDA GPU and this machine has none (or torch "
                                "was built without CUDA); available: cpu")
    if dev.index is not None and f"cuda:{dev.index}" not in have:
        raise InvalidInputError(f"device {value!r} does not exist; available: {', '.join(have)}")
    return dev


def normalize_classes(classes) -> tuple[str, ...]:
    """Validate a class list: non-empty, strings, no empty or duplicate names (case-insensitive).

    Inner whitespace is collapsed ("potted  plant" -> "potted plant").
    """
    if isinstance(classes, str):
        raise InvalidInputError(
            f"classes must be a list of names, got the string {classes!r}; pass e.g. ['cat', 'dog']")
    try:
        classes = list(classes)
    except TypeError:
        raise InvalidInputError(f"classes must be a list of names, got {type(classes).__name__}") from None
    if not classes:
        raise InvalidInputError("the class list is empty: give at least one class name")
    out, seen = [], {}
    for i, c in enumerate(classes):
        if not isinstance(c, str):
            raise InvalidInputError(f"class #{i} is {type(c).__name__} {c!r}, not a string")
        name = " ".join(c.split())
        if not name:
            raise InvalidInputError(f"class #{i} is empty or whitespace only: remove it or name it")
        key = name.lower()
        if key in seen:
            raise InvalidInputError(
                f"class {name!r} appears twice (#{seen[key]} and #{i}); class names must be unique")
        seen[key] = i
        out.append(name)
    return tuple(out)
