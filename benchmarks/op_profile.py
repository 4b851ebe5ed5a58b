"""(Not named profile.py: that would shadow the standard library module of that name.)
Top operators (torch.profiler) of one warm fast-path call: where the time goes.
Usage: python benchmarks/op_profile.py [--model tiny|full|DIR] [--top 15] [...]"""
import sys

from faseg_rt.cli.bench import main

if __name__ == "__main__":
    sys.exit(main(["profile"] + sys.argv[1:]))
