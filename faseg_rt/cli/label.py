"""The `label` subcommand: FA-Seg over many images on a Ray cluster (faseg_rt.scale).

    faseg-rt label INPUT [INPUT ...] (--classes 'cat,dog' | --classes-file classes.json) --out DIR
                   [--model ...] [--backend ...] [--ray-address auto|local|ADDRESS]
                   [--num-workers N] [--threads N] [--batch-size B] [--caption ... | --captions FILE]
                   [--candidates MODE|FILE] [--threshold X] [--overwrite] [--exif-transpose]
                   [--quiet | --verbose]

Each INPUT is an image, a directory, a glob, a text file of paths/URIs or a URI, as
faseg_rt.scale.inputs.resolve_inputs reads one.  A rerun into OUT never replaces masks made with
other settings (classes, caption, threshold, model, ...) unless --overwrite says so.
Ray is optional: without it the command prints how to install it and exits 2.  Exit codes as for
`segment`: 0 all done, 2 when some image failed (listed in OUT/manifest.jsonl) or on bad input.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from faseg_rt.errors import InvalidInputError
from faseg_rt.io import read_json_file


def read_classes_file(path: str) -> list[str]:
    """A JSON list of class names, or an object {"classes": [...]}."""
    data = read_json_file(path, "classes")
    if isinstance(data, dict):
        data = data.get("classes")
    if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
        raise InvalidInputError(
            f"classes file {path} must hold a JSON list of names, e.g. [\"cat\", \"dog\"], "
            "or {\"classes\": [...]}")
    return data


def cmd_label(args) -> int:
    from faseg_rt.cli.args import (check_device_dtype, check_engines, check_out_dir, frontend_kwargs,
                                   parse_classes)
    from faseg_rt.cli.frontend_args import check_frontend
    from faseg_rt.frontend.input_files import read_id_string_json
    from faseg_rt.rules import normalize_classes
    from faseg_rt.scale.inputs import resolve_many
    from faseg_rt.ray_env import prefer_local_ray_env, starts_local_ray
    from faseg_rt.scale.label import import_ray, label
    from faseg_rt.scale.manifest import SettingsConflictError

    # every mistake in the arguments is one line before Ray or torch is imported (seconds each)
    check_engines(args)
    classes = read_classes_file(args.classes_file) if args.classes_file else parse_classes(args.classes)
    classes = list(normalize_classes(classes))
    # per-image files are read here and checked against the inputs by label, before any writing
    caption = read_id_string_json(args.captions, "captions") if args.captions else args.caption
    candidates = args.candidates
    if isinstance(candidates, Path):
        candidates = read_id_string_json(candidates, "candidates", lists=True)
    check_out_dir(args.out)
    # several inputs, each resolved as one is; a missing input or one without images: one line
    inputs = resolve_many(args.inputs)
    check_frontend(args, classes=classes)  # a missing captioner / recogniser fails here, not in every worker
    prefer_local_ray_env(args.ray_address)  # read by Ray when it is imported (faseg_rt/ray_env.py)
    import_ray()  # without Ray: the install hint
    if starts_local_ray(args.ray_address):  # the workers run on this machine: its devices count
        check_device_dtype(args)
    try:
        with ray_terminal_to_log(args.quiet, args.verbose):
            report = label(inputs, classes, args.out, model=args.model, backend=args.backend,
                           engines=args.engines, caption=caption, threshold=args.threshold,
                           num_workers=args.num_workers, batch_size=args.batch_size,
                           ray_address=args.ray_address, device=args.device, dtype=args.dtype,
                           overwrite=args.overwrite, progress=not args.quiet, verbose=args.verbose,
                           candidates=candidates, frontend=frontend_kwargs(args),
                           exif_transpose=args.exif_transpose, config=args.config,
                           threads=args.num_threads, batching=args.batching)
    except SettingsConflictError as e:  # the library names overwrite=True; here it is a flag
        raise SettingsConflictError(e.out, e.count, e.diff, flag="--overwrite") from None
    print(f"labelled {report.ok} image(s), {report.failed} failed, {report.skipped} skipped "
          f"(already done) in {report.seconds:.1f} s; manifest: {report.manifest}")
    if report.failed:
        print(f"faseg-rt: {report.failed} image(s) failed (the first: {report.first_error}); see the "
              f"rows with \"status\": \"error\" in {report.manifest}", file=sys.stderr)
        return 2
    return 0


@contextlib.contextmanager
def ray_terminal_to_log(quiet: bool, verbose: bool = False):
    """What Ray writes to this process's stderr while the job runs goes to a temporary log
    (deleted when the job ends, its path printed when the job fails with something in it),
    unless --verbose.  Without --quiet, this command's own output and Ray's Python warnings (and
    Ray Data's progress bars in a terminal) still reach the terminal; with --quiet nothing does.

    Ray's C++ core writes its ERROR lines straight to file descriptor 2, whatever Python's
    logging says; its only setting, RAY_BACKEND_LOG_LEVEL, announces itself with a line of its
    own.  The line this keeps off the terminal is the notice, printed for every Ray Data actor
    pool, that an actor "has constructor arguments in the object store and max_restarts > 0":
    Ray Data hands each worker its DataContext and its map function (_SegmentWorker and its
    keyword arguments) as object references that the running dataset holds until it finishes,
    so a worker restarted mid-job finds them (the node-kill tests check it, docs/ray.md).
    """
    if verbose:
        yield
        return
    import tempfile

    log = tempfile.NamedTemporaryFile(prefix="faseg-rt-label-", suffix=".log", delete=False)
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    restore = contextlib.nullcontext() if quiet or not _on_fd2(sys.stderr) else _python_stderr_to(saved)
    failed = True
    try:
        with restore:
            yield
        failed = False
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        log.close()
        if failed and os.path.getsize(log.name):
            print(f"faseg-rt: Ray's messages of this run are in {log.name}", file=sys.stderr)
        else:
            os.unlink(log.name)


def _on_fd2(stream) -> bool:
    """True when `stream` writes to file descriptor 2 (not when a caller or pytest replaced it)."""
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False


@contextlib.contextmanager
def _python_stderr_to(fd: int):
    """sys.stderr, and the logging handlers that write to it (Ray's among them), write to file
    descriptor `fd` (the terminal's copy) while file descriptor 2 goes to the log."""
    import logging

    old = sys.stderr
    term = os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(old, "encoding", None) or "utf-8",
                     errors="backslashreplace")
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    moved = [h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers
             if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is old]
    sys.stderr = term
    for h in moved:
        h.setStream(term)
    try:
        yield
    finally:
        for h in moved:
            h.setStream(old)
        sys.stderr = old
        term.close()


def register(subparsers) -> None:
    """Add `label` to the faseg-rt subparsers."""
    from faseg_rt.cli.args import add_model_args, positive_int_arg, threshold_arg
    from faseg_rt.cli.frontend_args import add_frontend_args, add_image_file_args

    p = subparsers.add_parser(
        "label",
        description="Read images with Ray Data, segment them with one model per worker, write "
                    "OUT/<stem>.png palette masks and OUT/manifest.jsonl; a rerun skips finished images.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, directories, globs (quoted: 'x/*.png'), text files of "
                        "paths/URIs, or URIs; several may be given")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--classes", help="comma-separated class names, e.g. 'cat,dog'")
    g.add_argument("--classes-file", help="JSON list of class names")
    p.add_argument("--out", required=True, help="output directory (masks + manifest.jsonl)")
    caption = p.add_mutually_exclusive_group()
    caption.add_argument("--caption", default=None,
                         help="caption for every image, or 'auto' for a BLIP caption of each image")
    p.add_argument("--threshold", type=threshold_arg, default=None, help="background threshold in [0, 1]")
    p.add_argument("--ray-address", default=None,
                   help="auto (running cluster), local (new local instance) or host:port / ray://...; "
                        "default: RAY_ADDRESS or a new local instance")
    p.add_argument("--num-workers", type=positive_int_arg, default=None,
                   help="model replicas (default: one per GPU, or 1 without GPUs)")
    p.add_argument("--batch-size", type=positive_int_arg, default=1, help="images per worker call")
    p.add_argument("--overwrite", action="store_true", help="label everything again")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true",
                      help="print only the summary (no progress bars, no Ray notices)")
    talk.add_argument("--verbose", action="store_true",
                      help="also print Ray's INFO lines (execution plans, progress as log lines "
                           "when stderr is no terminal) and its core's notices")
    add_model_args(p)
    add_frontend_args(p)
    add_image_file_args(p, caption)
    p.set_defaults(func=cmd_label)
