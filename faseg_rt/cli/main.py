"""`faseg-rt`: segment images, run the offline demo, evaluate, export, benchmark, serve.

Exit codes: 0 success; 1 internal or I/O error; 2 bad usage or input (one line on stderr;
FASEG_DEBUG=1 adds the traceback of an internal error).
A batch keeps going past a bad image, lists the failures at the end and exits 2.
Every output file is written atomically (temporary name, then rename).
Results and summaries go to stdout; progress, notes and errors to stderr.

Only the module of the subcommand named on the command line is imported (the others are listed
by name and help), so `faseg-rt --help` and `--version` do not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from faseg_rt.cli.parser import CLIParser
from faseg_rt.errors import FASegError

#: subcommand -> (module of faseg_rt.cli that registers it, its line in `faseg-rt --help`).
#: The module's `register(sub)` adds the subcommand's parser with `func=cmd_<subcommand>`
#: ("eval-masks" -> cmd_eval_masks), the function `main` calls with the parsed flags.
COMMANDS = {
    "segment": ("segment", "segment images (files or folders) into palette PNG masks"),
    "demo": ("segment", "run end to end offline on a tiny model trained on a toy world"),
    "label": ("label", "label many images on a Ray cluster (needs faseg_rt[ray])"),
    "eval": ("eval", "segment a dataset split and report mIoU"),
    "eval-masks": ("eval", "score existing masks with the published mIoU"),
    "eval-candidates": ("candidates", "score caption-named candidates against ground-truth class lists"),
    "export": ("export", "export ONNX graphs / TensorRT engines (export/build_engines.py)"),
    "golden": ("export", "save golden inputs + ONNX Runtime (CPU) outputs of exported graphs"),
    "validate": ("export", "compare a backend with saved golden outputs (polygraphy Comparator)"),
    "bench": ("bench", "latency / throughput / memory benchmarks (see benchmarks/README.md)"),
    "serve": ("serve", "serve segmentation over HTTP on Ray Serve (extra .[serve])"),
}


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser, with the full options of the subcommand `argv` names (of all of them when argv
    is None) and the others as one help line each."""
    from faseg_rt.version import __version__

    p = CLIParser(prog="faseg-rt", description="FA-Seg open-vocabulary segmentation. "
                  "`faseg-rt COMMAND -h` lists a command's options.")
    p.add_argument("--version", action="version", version=f"faseg-rt {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = _chosen(argv) if argv is not None else None
    for name, (mod, text) in COMMANDS.items():
        if name in sub.choices:
            continue
        if argv is None or (chosen and mod == COMMANDS[chosen][0]):
            importlib.import_module(f"faseg_rt.cli.{mod}").register(_Commands(sub))
        else:  # listed (and suggested) without importing its module
            sub.add_parser(name, help=text)
    return p


class _Commands:
    """The subparsers object as a command module's `register` sees it: each parser it adds gets
    its line in `faseg-rt --help` from COMMANDS, the one place those lines are written."""

    def __init__(self, sub):
        self._sub = sub

    def add_parser(self, name, **kwargs):
        if name in COMMANDS:
            kwargs.setdefault("help", COMMANDS[name][1])
        return self._sub.add_parser(name, **kwargs)


def _chosen(argv) -> str | None:
    """The subcommand argv names: its first word that is not an option."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv=None) -> int:
    from faseg_rt.threads import prefer_passive_wait

    prefer_passive_wait()  # before torch loads, or libgomp never reads it (faseg_rt/threads.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from faseg_rt.hub import quiet_libraries

    quiet_libraries()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except FASegError as e:
        print(f"faseg-rt: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("faseg-rt: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions, ...: the machine's problem, not a bug of ours
        _traceback_if_debug()
        print(f"faseg-rt: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # an internal error: one line; the traceback with FASEG_DEBUG=1
        _traceback_if_debug()
        print(f"faseg-rt: internal error: {type(e).__name__}: {_one_line(e)} (rerun with "
              "FASEG_DEBUG=1 for the traceback and please report it with the command you ran)",
              file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _traceback_if_debug() -> None:
    """Print the current exception's traceback when FASEG_DEBUG is set (for bug reports)."""
    if os.environ.get("FASEG_DEBUG", "") not in ("", "0"):
        import traceback

        traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
