"""Time by stage and extra memory of one call for K = 1, 20, 150, 300, 1000 classes.
Usage: python benchmarks/vocab.py [--model tiny|full|DIR] [--ks 1,20,150,300,1000] [...]"""
import sys

from faseg_rt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["vocab"] + sys.argv[1:]))
