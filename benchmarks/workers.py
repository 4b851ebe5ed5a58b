"""`faseg-rt label` as W workers x T threads on the same images, images/s per setting, in one run
(default 2 workers x 1 thread against 1 worker x 2 threads).
Usage: python benchmarks/workers.py [--model tiny|full|DIR] [--settings 2x1,1x2] [--images 16] [...]"""
import sys

from faseg_rt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["workers"] + sys.argv[1:]))
