"""`faseg-rt segment` (image files to palette PNG masks) and `faseg-rt demo` (the same, offline,
on the tiny model trained on the toy world)."""

from __future__ import annotations

import sys
from pathlib import Path

from faseg_rt.cli.args import (
    DEFAULT_MODEL,
    add_model_args,
    apply_threads,
    check_device_dtype,
    check_engines,
    check_out_dir,
    load_segmenter,
    parse_classes,
    positive_int_arg,
    threshold_arg,
)
from faseg_rt.cli.frontend_args import add_frontend_args, add_image_file_args, check_frontend
from faseg_rt.errors import FASegError


def _for_image(value, path):
    """A per-image value: value[path] for a dict (from a file), else the value itself."""
    return value[path] if isinstance(value, dict) else value


def image_files(paths: list[str]) -> list[str]:
    """The files `segment` reads: each file as given and the images of each folder (sorted, not
    recursive); a missing path or a folder without images is refused before any model loads."""
    from faseg_rt.scale.inputs import IMAGE_EXTENSIONS

    files = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FASegError(f"no images in folder {text} (looked for {', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif not p.exists():
            raise FASegError(f"image {text} does not exist")
        else:
            files.append(text)
    return list(dict.fromkeys(files))  # a file named twice is segmented once


def segment_files(seg, images: list[str], classes: list[str], out: Path, caption=None,
                  threshold=None, overlay=False, batch_size=1, progress=True,
                  candidates=None, exif_transpose=False, empty: list | None = None) -> list[tuple[str, str]]:
    """Segment image files into out/<stem>.png + out/<stem>.json (+ <stem>_overlay.png);
    returns [(image, error)].  `empty`, when given, receives (image, reason) for each mask that
    is all background, the reason naming the threshold that emptied it.

    <stem>.json (SegmentationResult.sidecar): the vocabulary the labels index, the caption used,
    the segmented candidates and their sources, the recogniser's score of every class and the
    front-end model ids, "threads": torch's threads and why (faseg_rt.threads.current), and
    "precision": each stage's dtype as applied (Segmenter.precision).
    caption / candidates: one value for every image, as for
    Segmenter.segment_batch (a mode runs the front end), or a dict image path -> value (from
    --captions / --candidates files).

    Images are loaded `batch_size` at a time (memory stays bounded however many files are
    given); an image that cannot be read, or a batch the package refuses, is recorded and
    skipped, and the run goes on.  Internal errors propagate (the CLI exits 1).
    """
    from faseg_rt.images import load_image
    from faseg_rt.io import atomic_write_json, check_collisions, remove_stale_temps
    from faseg_rt.threads import current

    check_collisions(images)
    threads, precision = current(), seg.precision.names()
    # a run killed mid-write (SIGKILL, power) leaves temporaries of the files it redoes now
    remove_stale_temps(out, {f"{Path(p).stem}{tail}" for p in images
                             for tail in (".png", "_overlay.png", ".json")})
    failures: list[tuple[str, str]] = []
    bar = None
    if progress and len(images) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), unit="img", desc="faseg")
    for start in range(0, len(images), batch_size):
        group = []
        for path in images[start:start + batch_size]:
            try:
                group.append((path, load_image(path, exif_transpose)))
            except FASegError as e:
                failures.append((path, str(e)))
        try:
            results = seg.segment_batch([img for _, img in group], classes,
                                        captions=[_for_image(caption, p) for p, _ in group],
                                        batch_size=batch_size, threshold=threshold,
                                        candidates=[_for_image(candidates, p) for p, _ in group],
                                        return_scores=False) if group else []
        except FASegError as e:
            failures += [(path, str(e)) for path, _ in group]
            results = []
        for (path, _), res in zip(group, results):
            stem = Path(path).stem
            res.save(out / f"{stem}.png")
            atomic_write_json(out / f"{stem}.json", {**res.sidecar(), "threads": threads, "precision": precision})
            if empty is not None and not res.labels.any():
                empty.append((path, res.empty_reason()))
            if overlay:
                from faseg_rt.io import atomic_path

                with atomic_path(out / f"{stem}_overlay.png") as tmp:
                    res.overlay().save(tmp, format="PNG")
        if bar is not None:
            bar.update(len(images[start:start + batch_size]))
    if bar is not None:
        bar.close()
    return failures


def per_image_args(args, images: list[str], classes: list[str]):
    """(caption, candidates) for segment_files: the flags' value, or a dict image -> value read
    from --captions / --candidates files (every image named, every class known; else one line)."""
    from faseg_rt.frontend.input_files import read_candidates, read_captions

    caption, candidates = args.caption, args.candidates
    if args.captions is not None:
        caption = dict(zip(images, read_captions(args.captions, images)))
    if isinstance(candidates, Path):
        candidates = dict(zip(images, read_candidates(candidates, images, classes)))
    return caption, candidates


def cmd_segment(args) -> int:
    from faseg_rt.rules import normalize_classes

    # every mistake that needs no model is refused first, in one line (exit 2)
    classes = list(normalize_classes(parse_classes(args.classes)))
    images = image_files(args.images)
    out = check_out_dir(args.out)
    caption, candidates = per_image_args(args, images, classes)  # bad files: nothing written
    check_engines(args)
    check_device_dtype(args)
    check_frontend(args, classes=classes)  # a missing captioner / recogniser fails before the SD model
    apply_threads(args)  # --threads, else what this process may use (the sidecars record it)
    seg = load_segmenter(args)
    empty: list[tuple[str, str]] = []
    failures = segment_files(seg, images, classes, out, caption=caption,
                             threshold=args.threshold, overlay=args.overlay,
                             batch_size=args.batch_size, progress=not args.quiet,
                             candidates=candidates, exif_transpose=args.exif_transpose, empty=empty)
    print_summary(len(images) - len(failures), out, empty)
    if failures:
        for path, err in failures:
            print(f"faseg-rt: failed: {path}: {err}", file=sys.stderr)
        print(f"faseg-rt: {len(failures)} of {len(images)} image(s) failed", file=sys.stderr)
        return 2
    return 0


def print_summary(done: int, out: Path, empty: list[tuple[str, str]]) -> None:
    """What was written (stdout): the mask count and, per reason, the all-background masks."""
    if done:
        print(f"wrote {done} mask(s) (and .json) to {out}")
    by_reason: dict[str, list[str]] = {}
    for path, reason in empty:
        by_reason.setdefault(reason, []).append(Path(path).name)
    for reason, names in by_reason.items():
        shown = ", ".join(names[:5]) + (f", ... ({len(names) - 5} more)" if len(names) > 5 else "")
        print(f"{len(names)} of {done} mask(s) all background ({reason}): {shown}")


def cmd_demo(args) -> int:
    import numpy as np

    from faseg_rt.eval.datasets.toy_world import NAMES, ToyWorld
    from faseg_rt.eval.metrics import ConfusionMatrix
    from faseg_rt.io import atomic_path
    from faseg_rt.testing.toy_model import toy_model_dir

    out = Path(args.out)
    model_dir = toy_model_dir(args.model_dir)
    print(f"using the toy-world model in {model_dir}: a tiny SD 1.5-shaped model trained on "
          "synthetic scenes of nine object and three stuff classes (docs/eval.md, 'Accuracy on a trained "
          "model')", file=sys.stderr)
    from faseg_rt.segmenter import Segmenter

    seg = Segmenter.from_pretrained(model_dir, device="cpu")   # its faseg_config.json: latent 16
    sample = ToyWorld(size=128).sample(1000, args.picture)           # a validation picture
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "demo_image.png") as tmp:
        sample.image.save(tmp, format="PNG")
    classes = list(sample.classes)
    res = seg(sample.image, classes=classes, caption=sample.caption)
    res.save(out / "demo_image_mask.png")
    with atomic_path(out / "demo_image_overlay.png") as tmp:
        res.overlay().save(tmp, format="PNG")
    truth = np.zeros_like(res.labels)
    for i, name in enumerate(classes):
        truth[sample.mask == NAMES.index(name) + 1] = i + 1
    cm = ConfusionMatrix(len(classes) + 1)
    cm.update(truth, res.labels)
    ious = dict(zip(classes, cm.iou()[1:]))
    print(f"wrote {out / 'demo_image.png'} (the picture: {sample.caption!r}), {out / 'demo_image_mask.png'} "
          f"(its mask) and {out / 'demo_image_overlay.png'}; IoU with the exact masks: "
          + ", ".join(f"{n} {v:.2f}" for n, v in ious.items()))
    print(f"NOTE: this model knows only the toy world's classes ({', '.join(NAMES)}: coloured shapes "
          "and textured regions). For photographs use trained SD 1.5 weights, e.g.\n"
          f"  faseg-rt segment photo.jpg --classes 'cat,dog' --model {DEFAULT_MODEL} --out masks/")
    return 0


def register(sub) -> None:
    """Mount `segment` and `demo` on the core CLI."""
    s = sub.add_parser("segment", description="Segment image files (or every image in a folder) into "
                       "OUT/<stem>.png palette masks and OUT/<stem>.json sidecars.")
    s.add_argument("images", nargs="+", help="image files and folders (each folder's images, not recursive)")
    s.add_argument("--classes", required=True, help="comma-separated class names, e.g. 'cat,dog'")
    caption = s.add_mutually_exclusive_group()
    caption.add_argument("--caption", default=None,
                         help="caption of the image(s), or 'auto' for a BLIP caption of each image")
    s.add_argument("--threshold", type=threshold_arg, default=None, help="background threshold in [0, 1] (0.55)")
    s.add_argument("--out", default=".", help="output directory (default: current)")
    s.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    s.add_argument("--batch-size", type=positive_int_arg, default=1,
                   help="images through the networks together (default: 1)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(s)
    add_frontend_args(s)
    add_image_file_args(s, caption)
    s.set_defaults(func=cmd_segment)

    d = sub.add_parser("demo", description="Segment a toy-world picture with the tiny trained model that "
                       "ships with the package, offline, and score it against the picture's exact masks.")
    d.add_argument("--out", default="faseg-demo", help="output directory (default: faseg-demo)")
    d.add_argument("--picture", type=int, default=9, help="which validation picture of the toy world (default: 9)")
    d.add_argument("--model-dir", default=None,
                   help="a remade toy-world model (default: the shipped one; python -m faseg_rt.testing.toy_model)")
    d.set_defaults(func=cmd_demo)
