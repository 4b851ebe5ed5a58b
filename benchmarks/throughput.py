"""Images/s over batch sizes with peak memory (each batch size in a fresh process).
Usage: python benchmarks/throughput.py [--model tiny|full|DIR] [--batch-sizes 1,2,4] [...]"""
import sys

from faseg_rt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["throughput"] + sys.argv[1:]))
