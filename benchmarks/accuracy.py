"""Accuracy on the trained toy model: FA-Seg mIoU on the toy world's validation split for the
method, its ablations, the untrained model, and every precision / backend / batch variant.
Usage: python benchmarks/accuracy.py [--n 300] [--variants fp32,batch-8,bf16,untrained,onnxruntime,compile]"""
import sys

from faseg_rt.bench.accuracy import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
