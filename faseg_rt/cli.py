"""`faseg-rt`: segment images, run the offline demo, evaluate, export, benchmark.

Exit codes: 0 success; 1 internal or I/O error; 2 bad usage or input (one line on stderr;
FASEG_DEBUG=1 adds the traceback of an internal error).
A batch keeps going past a bad image, lists the failures at the end and exits 2.
Every output file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import FASegError

DEFAULT_MODEL = "XCLIU/2_rectified_flow_from_sd_1_5"


def _quiet_libraries() -> None:
    """Keep diffusers / transformers chatter (accelerate hints, progress bars) off the terminal."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import diffusers
        import transformers

        diffusers.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # pragma: no cover - logging tweaks never stop the CLI
        pass


def parse_classes(text: str) -> list[str]:
    """'cat, dog,potted plant' -> ['cat', 'dog', 'potted plant'] (validated later)."""
    return [c.strip() for c in text.split(",")]


def add_model_args(p: argparse.ArgumentParser, default_model: str | None = DEFAULT_MODEL) -> None:
    p.add_argument("--model", default=default_model, help="diffusers SD 1.x directory or hub id")
    p.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "tensorrt"])
    p.add_argument("--engines", default=None, help="directory written by export/build_engines.py")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=["float32", "fp32", "float16", "fp16"])


def load_segmenter(args):
    from .segmenter import Segmenter

    return Segmenter.from_pretrained(args.model, backend=args.backend, device=args.device,
                                     dtype=args.dtype, engines=args.engines)


def threshold_arg(text: str) -> float:
    """argparse type for --threshold: a number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must lie in [0, 1], got {v}")
    return v


def positive_int_arg(text: str) -> int:
    """argparse type for counts (--batch-size, --limit, ...): an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def segment_files(seg, images: list[str], classes: list[str], out: Path, caption=None,
                  threshold=None, overlay=False, batch_size=1, progress=True) -> list[tuple[str, str]]:
    """Segment image files into out/<stem>.png (+ <stem>_overlay.png); returns [(image, error)].

    Images are loaded `batch_size` at a time (memory stays bounded however many files are
    given); an image that cannot be read, or a batch the package refuses, is recorded and
    skipped, and the run goes on.  Internal errors propagate (the CLI exits 1).
    """
    from .distributed import check_collisions  # Ray is imported only when `label` runs
    from .images import load_image

    check_collisions(images)
    failures: list[tuple[str, str]] = []
    bar = None
    if progress and len(images) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), unit="img", desc="faseg")
    for start in range(0, len(images), batch_size):
        group = []
        for path in images[start:start + batch_size]:
            try:
                group.append((path, load_image(path)))
            except FASegError as e:
                failures.append((path, str(e)))
        try:
            results = seg.segment_batch([img for _, img in group], classes,
                                        captions=[caption] * len(group), batch_size=batch_size,
                                        threshold=threshold) if group else []
        except FASegError as e:
            failures += [(path, str(e)) for path, _ in group]
            results = []
        for (path, _), res in zip(group, results):
            stem = Path(path).stem
            res.save(out / f"{stem}.png")
            if overlay:
                from .io import atomic_path

                with atomic_path(out / f"{stem}_overlay.png") as tmp:
                    res.overlay().save(tmp, format="PNG")
        if bar is not None:
            bar.update(len(images[start:start + batch_size]))
    if bar is not None:
        bar.close()
    return failures


def cmd_segment(args) -> int:
    from .prompts import normalize_classes

    classes = list(normalize_classes(parse_classes(args.classes)))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FASegError(f"--out {out} is a file; give a directory (it is created if missing)")
    seg = load_segmenter(args)
    failures = segment_files(seg, args.images, classes, out, caption=args.caption,
                             threshold=args.threshold, overlay=args.overlay,
                             batch_size=args.batch_size, progress=not args.quiet)
    done = len(args.images) - len(failures)
    print(f"wrote {done} mask(s) to {out}", file=sys.stderr)
    if failures:
        for path, err in failures:
            print(f"faseg-rt: failed: {path}: {err}", file=sys.stderr)
        print(f"faseg-rt: {len(failures)} of {len(args.images)} image(s) failed", file=sys.stderr)
        return 2
    return 0


def cmd_demo(args) -> int:
    from .testing import build_tiny_model, synthetic_image

    out = Path(args.out)
    model_dir = Path(args.model_dir or Path.home() / ".cache" / "faseg_rt" / "tiny-sd15-random")
    print(f"building a tiny SD 1.5-shaped model with RANDOM weights in {model_dir} (offline) ...",
          file=sys.stderr)
    build_tiny_model(model_dir)
    from .segmenter import Segmenter

    seg = Segmenter.from_pretrained(model_dir, device="cpu")
    image = synthetic_image(320, 240, seed=3)
    out.mkdir(parents=True, exist_ok=True)
    from .io import atomic_path

    with atomic_path(out / "demo_image.png") as tmp:
        image.save(tmp, format="PNG")
    classes = ["sky", "ball", "box"]
    res = seg(image, classes=classes, caption="coloured shapes")
    res.save(out / "demo_image_mask.png")
    with atomic_path(out / "demo_image_overlay.png") as tmp:
        res.overlay().save(tmp, format="PNG")
    counts = {name: int((res.labels == i + 1).sum()) for i, name in enumerate(classes)}
    print(f"wrote {out / 'demo_image_mask.png'} and {out / 'demo_image_overlay.png'} "
          f"(pixels per class: {counts}, background: {int((res.labels == 0).sum())})")
    print("NOTE: this model has random weights, so its masks mean nothing; the demo only shows "
          "that the pipeline runs end to end. For real masks use trained SD 1.5 weights, e.g.\n"
          f"  faseg-rt segment photo.jpg --classes 'cat,dog' --model {DEFAULT_MODEL} --out masks/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="faseg-rt", description="FA-Seg open-vocabulary segmentation")
    p.add_argument("--version", action="version", version=f"faseg-rt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment image files into palette PNG masks")
    s.add_argument("images", nargs="+", help="image files")
    s.add_argument("--classes", required=True, help="comma-separated class names, e.g. 'cat,dog'")
    s.add_argument("--caption", default=None, help="optional caption of the image(s)")
    s.add_argument("--threshold", type=threshold_arg, default=None, help="background threshold in [0, 1] (0.55)")
    s.add_argument("--out", default=".", help="output directory (default: current)")
    s.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    s.add_argument("--batch-size", type=positive_int_arg, default=1)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(s)
    s.set_defaults(func=cmd_segment)

    d = sub.add_parser("demo", help="run end to end offline on a tiny random model")
    d.add_argument("--out", default="faseg-demo")
    d.add_argument("--model-dir", default=None, help="where to build the tiny model")
    d.set_defaults(func=cmd_demo)

    for register in _extra_commands():
        register(sub)
    return p


def _extra_commands():
    """Subcommands that live next to their stage (evaluation, export, benchmarks, Ray labelling)."""
    from .bench import register as bench_register
    from .data.cli import register as eval_register
    from .export import register as export_register  # onnx / tensorrt are imported only when run
    from .label_cli import register as label_register  # Ray is imported only when `label` runs

    return [eval_register, export_register, bench_register, label_register]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except FASegError as e:
        print(f"faseg-rt: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("faseg-rt: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # disk full, permissions, ...: the machine's problem, not a bug of ours
        _traceback_if_debug()
        print(f"faseg-rt: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # an internal error: one line; the traceback with FASEG_DEBUG=1
        _traceback_if_debug()
        print(f"faseg-rt: internal error: {type(e).__name__}: {_one_line(e)} (rerun with "
              "FASEG_DEBUG=1 for the traceback and please report it with the command you ran)",
              file=sys.stderr)
        return 1


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _traceback_if_debug() -> None:
    """Print the current exception's traceback when FASEG_DEBUG is set (for bug reports)."""
    if os.environ.get("FASEG_DEBUG", "") not in ("", "0"):
        import traceback

        traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
