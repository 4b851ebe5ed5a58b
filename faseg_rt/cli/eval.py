"""The `eval` and `eval-masks` subcommands, for the core CLI to mount with `register(sub)`.

    faseg-rt eval --dataset voc|context|coco-object|ade150|ade847|context459|coco-stuff|toy
                  [--root DIR] --out DIR [--toy-split val|train] [--toy-count N]
                  [--candidates FILE.json|gt] [--captions FILE.json|auto|dataset] [--model ID_OR_DIR]
                  [--backend B] [--device D] [--dtype T] [--engines DIR] [--limit N]
                  [--batch-size B] [--threshold X] [--report-images N] [--no-progress]
    faseg-rt eval-masks --dataset ... [--root DIR] --pred MASKS_DIR [--out DIR] [--limit N]

--root points at VOCdevkit/VOC2012 (voc), VOCdevkit/VOC2010 (context, context459),
coco_stuff164k (coco-object, coco-stuff), ADEChallengeData2016 (ade150) or ADE20K_2021_17_01
(ade847), or at a folder above it: the reader says which it used (docs/eval.md lists every
layout); it is required for all but toy, the generated toy world, whose split is written on
first use into --root or, without one, a cache folder. Each handler returns an exit code: 0 on
success, 2 after printing one line to stderr for a FASegError (bad input, missing files, model
problems).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faseg_rt.cli.args import (add_model_args, apply_threads, check_device_dtype, check_engines,
                               load_segmenter, positive_int_arg, threshold_arg)
from faseg_rt.cli.frontend_args import add_frontend_args, check_frontend, frontend_meta, path_or_auto
from faseg_rt.cli.frontend_args import candidates_arg as mode_or_file
from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.datasets.registry import DATASETS, READERS, open_dataset
from faseg_rt.eval.datasets.toy import COUNT as TOY_COUNT
from faseg_rt.eval.datasets.toy import SPLIT_SEEDS as TOY_SPLITS

#: --captions value: the captions file the dataset ships (toy: ROOT/captions.json).
DATASET_CAPTIONS = "dataset"


def candidates_arg(text: str):
    """argparse type for eval's --candidates: a mode, 'gt' (the ground-truth oracle) or a JSON file."""
    return mode_or_file(text, extra=("gt",))


def captions_arg(text: str):
    """argparse type for eval's --captions: 'auto', 'dataset' or a JSON file (./dataset for a
    file of that name)."""
    return DATASET_CAPTIONS if text == DATASET_CAPTIONS else path_or_auto(text)


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=DATASETS,
                   help="voc (VOC2012 val, 21 classes), context (PASCAL Context-59 val, 60), "
                        "coco-object (COCO val2017 objects, 81), ade150 (ADE20K-150 val), "
                        "ade847 (ADE20K-847 val), context459 (PASCAL Context-459 val), "
                        "coco-stuff (COCO-Stuff-171 val2017), toy (the synthetic toy world, 7 "
                        "classes: generated on first use, see --toy-split / --toy-count)")
    p.add_argument("--root", type=Path, default=None,
                   help="VOCdevkit/VOC2012 | VOCdevkit/VOC2010 | coco_stuff164k | "
                        "ADEChallengeData2016 | ADE20K_2021_17_01, or a folder above it; required "
                        "except for toy (a folder to write the split in; default: the cache, "
                        "toy/<split>-128-<count>)")
    p.add_argument("--toy-split", choices=tuple(TOY_SPLITS), default=None,
                   help="toy only: val (seed 1000, the default) or train (seed 0)")
    p.add_argument("--toy-count", type=positive_int_arg, default=None, metavar="N",
                   help=f"toy only: pictures in the split (default: {TOY_COUNT})")
    p.add_argument("--limit", type=positive_int_arg, default=None,
                   help="score only the first N images of the split")


def register(subparsers) -> None:
    """Add `eval` and `eval-masks` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "eval",
        description="Segment a VOC / Context / COCO-Object val split, save palette masks under "
                    "OUT/masks (existing ones are kept: rerun to resume), and write "
                    "OUT/metrics.json and OUT/report.png.")
    _dataset_args(p)
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--candidates", type=candidates_arg, default=None,
                   help="JSON image id -> space-separated candidate class names; a mode: 'auto' "
                        "(the classes the caption names plus the recogniser's), 'caption', "
                        "'recognizer'; or 'gt': the oracle, each image's ground-truth classes "
                        "(labelled as such in the report). Default: every image gets all "
                        "dataset classes")
    p.add_argument("--captions", "--caption", type=captions_arg, default=None,
                   help="JSON image id -> caption, 'auto' (BLIP captions) or 'dataset' (the "
                        "captions the dataset ships: toy's ROOT/captions.json); default: none")
    p.add_argument("--published-candidates", type=Path, default=None, metavar="FILE",
                   help="with a --candidates mode: score these lists' precision / recall of class "
                        "presence beside the front end's (they are not used to segment)")
    add_model_args(p)
    p.add_argument("--batch-size", type=positive_int_arg, default=8,
                   help="images through the networks together (default: 8)")
    p.add_argument("--threshold", type=threshold_arg, default=None,
                   help="background threshold (default: VOC 0.55, Context 0.50, COCO 0.60; 0 for "
                        "the benchmarks without a background class)")
    p.add_argument("--report-images", type=int, default=8,
                   help="rows in OUT/report.png (0: no report)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_frontend_args(p, candidates=False)
    p.set_defaults(func=cmd_eval)

    q = subparsers.add_parser(
        "eval-masks",
        description="Score PRED/<id>.png class-index masks against a dataset's ground truth.")
    _dataset_args(q)
    q.add_argument("--pred", required=True, type=Path, help="directory of <id>.png masks")
    q.add_argument("--out", type=Path, default=None,
                   help="write metrics.json (and report.png) here")
    q.add_argument("--report-images", type=int, default=0,
                   help="rows in OUT/report.png (needs --out)")
    q.set_defaults(func=cmd_eval_masks)


def _open(args: argparse.Namespace):
    """The dataset reader for --dataset / --root (and toy's options); names the folder when it was
    found below --root, or generated or chosen for toy."""
    toy = {k: v for k, v in (("split", args.toy_split), ("count", args.toy_count)) if v is not None}
    if args.dataset != "toy":
        if toy:
            raise InvalidInputError(f"--toy-{next(iter(toy))} applies to --dataset toy only")
        if args.root is None:
            hint = next(r.root_hint for r in READERS if r.name == args.dataset)
            raise InvalidInputError(f"--root is required for --dataset {args.dataset}: point it at {hint}")
    dataset = open_dataset(args.dataset, args.root, **toy)
    if dataset.root != args.root or dataset.generated:
        print(dataset.root_note, file=sys.stderr)
    return dataset


def _dataset_captions(dataset) -> Path:
    """--captions dataset: the captions file the dataset ships (an error when it ships none)."""
    path = dataset.captions_file
    if path is None:
        raise InvalidInputError(f"--captions dataset: --dataset {dataset.name} ships no captions; "
                                "pass a JSON file of image id -> caption, or 'auto'")
    return path


def cmd_eval(args: argparse.Namespace) -> int:
    """Handler of `faseg-rt eval`."""
    from faseg_rt.eval.inputs import read_id_string_json
    from faseg_rt.eval.loop import evaluate
    from faseg_rt.eval.metrics import metrics_markdown
    from faseg_rt.eval.presence import presence_markdown

    dataset = _open(args)
    if args.captions == DATASET_CAPTIONS:
        args.captions = _dataset_captions(dataset)
    # read the inputs once before loading the model, so a bad file fails in a second
    for path, what in ((args.candidates, "candidates"), (args.captions, "captions"),
                       (args.published_candidates, "published candidates")):
        if isinstance(path, Path):
            read_id_string_json(path, what)
    check_engines(args)
    check_device_dtype(args)
    check_frontend(args, caption_attr="captions", classes=dataset.class_names)
    front = frontend_meta(args)  # {} unless captions / candidates are "auto"
    apply_threads(args)  # --threads, else what this process may use (metrics.json records it)
    seg = load_segmenter(args)  # the front end loads only when a mode asks for it
    meta = {"model": str(args.model), "backend": args.backend, **front}
    metrics = evaluate(seg, dataset, args.out, candidates=args.candidates,
                       captions=args.captions, limit=args.limit, batch_size=args.batch_size,
                       threshold=args.threshold, report_images=args.report_images,
                       progress=not args.no_progress, meta=meta,
                       published_candidates=args.published_candidates)
    print(metrics_markdown(metrics))
    if "presence" in metrics:
        print("\nclass presence (candidates against the ground truth)\n")
        print(presence_markdown(metrics["presence"]))
    print(f"\nmetrics: {Path(args.out) / 'metrics.json'}")
    return 0


def cmd_eval_masks(args: argparse.Namespace) -> int:
    """Handler of `faseg-rt eval-masks`."""
    from faseg_rt.eval.loop import evaluate_masks
    from faseg_rt.eval.metrics import metrics_markdown

    dataset = _open(args)
    metrics = evaluate_masks(dataset, args.pred, out_dir=args.out, limit=args.limit,
                             report_images=args.report_images if args.out else 0)
    print(metrics_markdown(metrics))
    if args.out:
        print(f"\nmetrics: {Path(args.out) / 'metrics.json'}")
    return 0
