"""`faseg-rt export` and `python export/build_engines.py`: the command line of engines/build.py."""

from __future__ import annotations

import argparse
import sys

from faseg_rt.engines.build import DEFAULT_MAX_CLASS_CHUNKS, DEFAULT_OPSET, build


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="diffusers SD 1.x directory or hub id")
    p.add_argument("--out", required=True, help="engines directory to write (manifest.json last)")
    p.add_argument("--onnx-only", action="store_true", help="stop after the checked ONNX graphs (no GPU needed)")
    p.add_argument("--fp16", action="store_true", help="TensorRT engines in fp16 (ONNX stays fp32)")
    p.add_argument("--batch-sizes", default="1,2,4,8", help="images per call the TensorRT profile covers")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--max-class-chunks", type=int, default=DEFAULT_MAX_CLASS_CHUNKS,
                   help="class-prompt chunks of 77 tokens per image the TensorRT profile covers")
    p.add_argument("--force", action="store_true", help="rebuild everything, even what is up to date")


def run_args(args) -> int:
    build(args.model, args.out, onnx_only=args.onnx_only, fp16=args.fp16, batch_sizes=args.batch_sizes,
          opset=args.opset, force=args.force, max_class_chunks=args.max_class_chunks,
          log=lambda s: print(s, file=sys.stderr, flush=True))
    return 0


def register(subparsers) -> None:
    """Mount `faseg-rt export` on the core CLI."""
    p = subparsers.add_parser("export", help="export ONNX graphs / TensorRT engines (export/build_engines.py)")
    add_arguments(p)
    p.set_defaults(func=run_args)
