"""Each fast-path optimisation against the plain way, on the same captured tensors, one run.
Usage: python benchmarks/ablations.py [--model tiny|full|DIR] [--classes K] [--repeats R]"""
import sys

from faseg_rt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["ablations"] + sys.argv[1:]))
