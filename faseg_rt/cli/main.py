"""`faseg-rt`: segment images, run the offline demo, evaluate, export, benchmark, serve.

Exit codes: 0 success; 1 internal or I/O error; 2 bad usage or input (one line on stderr;
FASEG_DEBUG=1 adds the traceback of an internal error).
A batch keeps going past a bad image, lists the failures at the end and exits 2.
Every output file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from faseg_rt.errors import FASegError
from faseg_rt.hub import quiet_libraries


def build_parser() -> argparse.ArgumentParser:
    from faseg_rt import __version__

    p = argparse.ArgumentParser(prog="faseg-rt", description="FA-Seg open-vocabulary segmentation")
    p.add_argument("--version", action="version", version=f"faseg-rt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    for register in _extra_commands():
        register(sub)
    return p


def _extra_commands():
    """One module per subcommand; each imports its heavy dependencies (onnx, tensorrt, Ray) only
    when it runs."""
    from faseg_rt.cli import bench, candidates, eval, export, label, segment, serve

    return [segment.register, eval.register, candidates.register, export.register, bench.register,
            label.register, serve.register]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
