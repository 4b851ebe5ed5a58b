#!/usr/bin/env python3
"""Export FA-Seg's four networks to checked ONNX graphs and (on a CUDA GPU) TensorRT engines.

    python export/build_engines.py --model ID_OR_DIR --out DIR [--onnx-only] [--fp16]
                                   [--batch-sizes 1,2,4,8] [--opset N] [--force]

A thin command line over faseg_rt.engines.build (also available as `faseg-rt export`); see
docs/export.md.  Exit codes: 0 ok, 1 internal error, 2 bad usage or input.
"""

import sys
from pathlib import Path

# Run the faseg_rt of this checkout (the one this script ships with), installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from faseg_rt.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
