"""Argument types and helpers shared by every subcommand (no subcommand imports another)."""

from __future__ import annotations

import argparse
import difflib
import re
import sys

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError

#: The checkpoint the published FA-Seg code uses (InstaFlow, SD 1.5 architecture).
DEFAULT_MODEL = "XCLIU/2_rectified_flow_from_sd_1_5"


class CLIParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors name the closest valid spelling of a misspelt option
    or choice ("--clases: did you mean --classes?"), which argparse before Python 3.14 does not.

    A misspelt required option is reported by argparse as the required one missing, so the
    suggestion is looked up from the words the parser was given, not from argparse's message.
    """

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message):
        message = re.sub(r", '_[^']*'", "", message)  # internal subcommands stay unlisted
        hints = self._option_hints() + _choice_hints(message)
        super().error("; ".join([message, *hints]))

    def _option_hints(self) -> list[str]:
        known = [o for p in self._parsed() for o in p._option_string_actions if o.startswith("--")]
        hints = []
        for word in getattr(self, "_given", []):
            name = word.split("=", 1)[0]
            if not name.startswith("--") or any(k.startswith(name) for k in known):
                continue  # a known option, or an abbreviation argparse accepts
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            if close:
                hints.append(f"{name}: did you mean {close[0]}?")
        return hints


    def _parsed(self):
        """This parser and the subcommand parsers that parsed words of this command line (their
        unrecognised words are reported by the top parser)."""
        yield self
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    if getattr(sub, "_given", None) is not None and isinstance(sub, CLIParser):
                        yield from sub._parsed()


def _choice_hints(message: str) -> list[str]:
    """From argparse's "invalid choice: 'segmnt' (choose from 'segment', ...)" the closest choice."""
    m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not m:
        return []
    close = difflib.get_close_matches(m.group(1), re.findall(r"'([^']*)'", m.group(2)), n=1)
    return [f"did you mean {close[0]}?"] if close else []


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


def load_segmenter(args):
    """The Segmenter the model flags (and the front-end flags, where the command has them) name."""
    from faseg_rt.segmenter import Segmenter

    return Segmenter.from_pretrained(args.model, backend=args.backend, device=args.device,
                                     dtype=args.dtype, engines=args.engines, **frontend_kwargs(args))


def frontend_kwargs(args) -> dict:
    """Segmenter.from_pretrained's front-end settings from the parsed flags (cli.frontend_args)."""
    names = ("captioner", "recognizer", "candidate_threshold", "max_candidates")
    kw = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if getattr(args, "lexicon", None) is not None:
        from faseg_rt.frontend.caption_classes import load_lexicon

        kw["lexicon"] = load_lexicon(args.lexicon)
    return kw


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
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value must be an integer >= 1, got {text!r}") from None
    try:
        return rules.positive_int(v, "the value")
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
