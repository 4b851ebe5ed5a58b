"""Per-image latency by stage at batch 1, with the reference path and the network-only floor
measured in the same run.  Usage: python benchmarks/latency.py [--model tiny|full|DIR] [...]"""
import sys

from faseg_rt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["latency"] + sys.argv[1:]))
