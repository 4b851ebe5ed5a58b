"""Argument types and helpers shared by every subcommand (no subcommand imports another)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError

#: The checkpoint the published FA-Seg code uses (InstaFlow, SD 1.5 architecture).
DEFAULT_MODEL = "XCLIU/2_rectified_flow_from_sd_1_5"


def parse_classes(text: str) -> list[str]:
    """'cat, dog,potted plant' -> ['cat', 'dog', 'potted plant'] (validated later)."""
    return [c.strip() for c in text.split(",")]


def add_model_args(p: argparse.ArgumentParser, default_model: str | None = DEFAULT_MODEL) -> None:
    p.add_argument("--model", default=default_model,
                   help=f"diffusers SD 1.x directory or hub id (default: {default_model})")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"],
                   help="who runs the networks (default: torch; the others need --engines)")
    p.add_argument("--engines", default=None, help="directory written by export/build_engines.py")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=rules.DTYPE_CHOICES,
                   help="network precision (default: float16 on CUDA, else float32)")
    p.add_argument("--batching", default=rules.BATCHING[0], choices=rules.BATCHING,
                   help="invariant (default): each image alone through the networks, so every "
                        "mask is byte-identical to segmenting that image by itself; shared: a "
                        "batch's images share network passes (faster on a GPU; a few pixels may "
                        "differ from single calls)")
    add_threads_arg(p)
    add_config_arg(p)


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """--threads N: torch's intra-op threads (per worker / replica where there are several).
    dest num_threads: serve's older --num-threads sets the same value."""
    p.add_argument("--threads", dest="num_threads", type=threads_arg, default=None, metavar="N",
                   help="torch threads (default: the CPUs this process may use: its CPU affinity, "
                        "cgroup quota and Ray's CPUs for a worker, or OMP_NUM_THREADS)")


def threads_arg(text: str) -> int:
    """argparse type for --threads: rules.threads of the integer."""
    return _rule_int(text, rules.threads)


def apply_threads(args) -> dict:
    """Set torch's threads by faseg_rt.threads (--threads wins); returns the record that
    sidecars and metrics store."""
    from faseg_rt.threads import apply

    return apply(getattr(args, "num_threads", None))


def add_config_arg(p: argparse.ArgumentParser) -> None:
    """--config FILE: the method's constants (faseg_rt.config.FASegConfig) from a JSON file."""
    p.add_argument("--config", type=config_arg, default=None, metavar="FILE",
                   help="JSON object of FASegConfig fields to change, e.g. {\"image_size\": 64, "
                        "\"latent_size\": 8, \"cross_weights\": {\"1\": 0.15, ...}, ...} "
                        "(default: the published 512 px settings)")


def config_arg(text: str):
    """argparse type for --config: FASegConfig.from_json of the file (a bad file: exit 2)."""
    from faseg_rt.config import FASegConfig

    try:
        return FASegConfig.from_json(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def check_out_dir(text: str) -> Path:
    """--out: a directory, or a path where one can be created; refused before any model loads."""
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file; give a directory (it is created if missing)")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InvalidInputError(f"--out {out} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInputError(f"--out {out}: no permission to write in {parent}; choose another directory")
    return out


def check_engines(args) -> None:
    """--backend onnxruntime / tensorrt without --engines: one line naming the flag (the
    library's message names its keyword, engines=DIR)."""
    if getattr(args, "backend", "torch") != "torch" and getattr(args, "engines", None) is None:
        raise InvalidInputError(f"--backend {args.backend} runs exported graphs: pass --engines DIR "
                                "(written by python export/build_engines.py --model MODEL --out DIR)")


def check_device_dtype(args) -> None:
    """--device and --dtype by the library's rules (a device this machine has, a precision that
    runs there), before anything loads: `cuda` without a GPU is one line, not a driver error."""
    from faseg_rt.devices import default_device_dtype

    default_device_dtype(getattr(args, "device", None), getattr(args, "dtype", None))


def load_segmenter(args):
    """The Segmenter the model flags (and the front-end flags, where the command has them) name."""
    from faseg_rt.segmenter import Segmenter

    return Segmenter.from_pretrained(args.model, backend=args.backend, device=args.device,
                                     dtype=args.dtype, engines=args.engines, config=args.config,
                                     batch_invariant=rules.batching(getattr(args, "batching", True)),
                                     **frontend_kwargs(args))


def frontend_kwargs(args) -> dict:
    """Segmenter.from_pretrained's front-end settings from the parsed flags (cli.frontend_args)."""
    names = ("captioner", "recognizer", "candidate_threshold", "max_candidates")
    kw = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if getattr(args, "lexicon", None) is not None:
        kw["lexicon"] = lexicon_arg(args)
    return kw


def lexicon_arg(args, classes=None, what: str = "class of the vocabulary") -> dict | None:
    """--lexicon FILE, the one place a command reads it: read on the first call and kept on
    `args`, so every later use in the command sees the same mapping.  An empty, unreadable or
    malformed file is one InvalidInputError line; given the vocabulary, a malformed entry is
    refused and keys matching none of its classes get one warning line (they are ignored, not
    refused: one lexicon may serve many vocabularies).  None when the flag is not given."""
    path = getattr(args, "lexicon", None)
    if path is None:
        return None
    from faseg_rt.frontend.lexicon import load_lexicon, split_user_lexicon, unmatched_keys

    lexicon = vars(args).get("_lexicon_read")
    if lexicon is None:
        lexicon = args._lexicon_read = load_lexicon(path)
    if classes is not None:
        split_user_lexicon(lexicon, classes)
        stray = unmatched_keys(lexicon, [classes])
        if stray:
            print(f"warning: --lexicon {path}: {', '.join(map(repr, stray))} match no {what} and "
                  "are ignored; key entries by the vocabulary's class names", file=sys.stderr)
    return lexicon


def threshold_arg(text: str) -> float:
    """argparse type for --threshold, --candidate-threshold: rules.threshold of the number.

    argparse puts the flag in front of the message ("argument --threshold: the value must ...")."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value must be a number in [0, 1], got {text!r}") from None
    try:
        return rules.threshold(v, "the value")
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_int_arg(text: str) -> int:
    """argparse type for counts (--batch-size, --limit, ...): rules.positive_int of the integer."""
    return _rule_int(text, lambda v: rules.positive_int(v, "the value"))


def _rule_int(text: str, rule) -> int:
    """int(text) checked by `rule`; either failure is argparse's one line."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value must be an integer >= 1, got {text!r}") from None
    try:
        return rule(v)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
