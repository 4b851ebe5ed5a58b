"""The `faseg-rt` command line: main.py dispatches to one module per subcommand (segment and demo,
eval, label, export, bench); args.py holds the argument types they share."""

from faseg_rt.cli.main import main

__all__ = ["main"]
