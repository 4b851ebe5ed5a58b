"""`faseg-rt export` (and `python export/build_engines.py`), `faseg-rt golden`, `faseg-rt validate`:
the command lines of engines/build.py and engines/golden.py."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faseg_rt import rules
from faseg_rt.engines.build import DEFAULT_MAX_CLASS_CHUNKS, DEFAULT_OPSET, build


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="diffusers SD 1.x directory or hub id")
    p.add_argument("--out", required=True, help="engines directory to write (manifest.json last)")
    p.add_argument("--onnx-only", action="store_true", help="stop after the checked ONNX graphs (no GPU needed)")
    p.add_argument("--fp16", action="store_true",
                   help="also export fp16 ONNX graphs (capture kept fp32) and build the engines from them")
    p.add_argument("--dtype", default=None, choices=rules.DTYPE_CHOICES,
                   help="fp16 = --fp16; bf16 and auto are torch-backend precisions (not exported)")
    p.add_argument("--tf32", action="store_true", help="let fp32 TensorRT engines use TF32 (default: off)")
    p.add_argument("--batch-sizes", default="1,2,4,8", help="images per call the TensorRT profiles cover")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, 17 to 20 (default {DEFAULT_OPSET})")
    p.add_argument("--max-class-chunks", type=int, default=DEFAULT_MAX_CLASS_CHUNKS,
                   help="class-prompt chunks of 77 tokens per unet_attn call (TensorRT profiles; larger "
                        "vocabularies run in groups of this many)")
    p.add_argument("--skip-cross", default=None,
                   help="latent resolutions whose class-aware maps unet_attn does not compute, e.g. 64, or "
                        "'none' (default: those the default config weighs by 0)")
    p.add_argument("--force", action="store_true", help="rebuild everything, even what is up to date")


def cmd_export(args) -> int:
    import torch

    from faseg_rt.errors import InvalidInputError

    dtype = None if args.dtype is None else rules.dtype(args.dtype)
    if dtype in (torch.bfloat16, rules.AUTO):
        # onnxruntime (1.32, CPU) rejects a bfloat16 Conv as an invalid model, and TensorRT
        # builds from the fp32 / fp16 graphs
        raise InvalidInputError(f"--dtype {args.dtype} graphs are not exported (onnxruntime's CPU provider "
                                "cannot run bfloat16): export fp32 or --fp16, and run bf16 with --backend torch")
    fp16 = args.fp16 or dtype == torch.float16
    build(args.model, args.out, onnx_only=args.onnx_only, fp16=fp16, batch_sizes=args.batch_sizes,
          opset=args.opset, force=args.force, max_class_chunks=args.max_class_chunks, tf32=args.tf32,
          skip_cross=_skip_cross(args.skip_cross), log=_log)
    return 0


def _skip_cross(text):
    from faseg_rt.errors import InvalidInputError

    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InvalidInputError(f"--skip-cross must be comma-separated resolutions or 'none', got {text!r}") from None


def _log(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def _graphs(text):
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else None


def cmd_golden(args) -> int:
    from faseg_rt.engines.golden import SIZES, save_golden
    from faseg_rt.errors import InvalidInputError

    if args.batch < 1:
        raise InvalidInputError(f"--batch must be a positive integer, got {args.batch}")
    save_golden(args.engines, args.out, fp16=args.fp16, sizes=dict(SIZES, N=2 * args.batch),
                graphs=_graphs(args.graphs), log=_log)
    return 0


def cmd_validate(args) -> int:
    from faseg_rt.backends import load_backend
    from faseg_rt.engines.golden import validate
    from faseg_rt.engines.manifest import load_manifest
    from faseg_rt.io import atomic_write_json

    import torch

    load_manifest(args.engines)  # a clear error before loading anything heavy
    path = Path(args.golden) / "golden.json"
    rec = json.loads(path.read_text()) if path.is_file() else {"precision": "fp32"}  # validate says what is missing
    dtype = torch.float16 if rec["precision"] == "fp16" else torch.float32
    backend = load_backend(args.backend, args.model, device=args.device, dtype=dtype, engines=args.engines)
    report = validate(backend, args.golden, atol=args.atol, rtol=args.rtol, graphs=_graphs(args.graphs), log=_log)
    if args.report:
        atomic_write_json(args.report, report)
    tol = report["tolerances"]
    _log(f"[validate] {args.backend} vs golden onnxruntime-cpu ({rec['precision']}, atol {tol['atol']}, "
         f"rtol {tol['rtol']}): {'PASSED' if report['passed'] else 'FAILED'}")
    return 0 if report["passed"] else 1


def register(subparsers) -> None:
    """Mount `faseg-rt export`, `faseg-rt golden` and `faseg-rt validate` on the core CLI."""
    p = subparsers.add_parser(
        "export", description="Export the four networks to checked ONNX graphs and (on CUDA) build "
                              "TensorRT engines; DIR/manifest.json is written last.")
    add_arguments(p)
    p.set_defaults(func=cmd_export)
    g = subparsers.add_parser("golden",
                              description="Save golden inputs and ONNX Runtime (CPU) outputs of exported graphs.")
    g.add_argument("--engines", required=True, help="engines directory written by faseg-rt export")
    g.add_argument("--out", required=True, help="folder for the polygraphy JSON files and golden.json")
    g.add_argument("--fp16", action="store_true", help="the fp16 graphs (export --fp16) instead of the fp32 ones")
    g.add_argument("--batch", type=int, default=1, help="images per call (N = 2 x batch latents)")
    g.add_argument("--graphs", default=None, help="comma-separated subset (default: all four)")
    g.set_defaults(func=cmd_golden)
    v = subparsers.add_parser("validate",
                              description="Compare a backend with saved golden outputs (polygraphy Comparator).")
    v.add_argument("--model", required=True, help="the model the engines were built from")
    v.add_argument("--engines", required=True, help="engines directory written by faseg-rt export")
    v.add_argument("--golden", required=True, help="folder written by faseg-rt golden")
    v.add_argument("--backend", default="tensorrt", choices=["tensorrt", "onnxruntime", "torch"],
                   help="the backend to check (default: tensorrt)")
    v.add_argument("--device", default="cuda", help="default: cuda")
    v.add_argument("--atol", type=float, default=None, help="default: the golden data's, by precision")
    v.add_argument("--rtol", type=float, default=None, help="default: the golden data's, by precision")
    v.add_argument("--graphs", default=None, help="comma-separated subset (bisect one graph at a time)")
    v.add_argument("--report", default=None, help="write the per-output errors as JSON here")
    v.set_defaults(func=cmd_validate)
