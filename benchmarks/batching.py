"""Batch-invariant vs shared batching: images/s and disagreement with single calls.
Usage: python benchmarks/batching.py [--model tiny|full|DIR] [--latents 8,16] [--images 8] [...]"""
import sys

from faseg_rt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["batching"] + sys.argv[1:]))
