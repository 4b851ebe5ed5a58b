"""The localisation study on the toy world: FA-Seg mIoU and the attention signal against
training time, one curve per training choice.
Usage: python benchmarks/localisation.py --choice baseline [--choice text-full ...] [--minutes 15] [--plot]"""
import sys

from faseg_rt.bench.localisation import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
