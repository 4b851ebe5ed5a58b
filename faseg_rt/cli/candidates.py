"""The `eval-candidates` subcommand: class presence of caption-named candidates, from files alone.

    faseg-rt eval-candidates --dataset voc|context|coco-object|... --captions FILE.json
                             --groundtruth FILE.json [--published FILE.json]
                             [--lexicon FILE.json|yaml] [--json OUT.json]

Every file is a JSON object image id -> string (a caption, or space-separated class names as in
the published FA-Seg repository's json/ folder).  Prints precision / recall / classes per image of
the caption route, the published lists and their union against the ground-truth lists.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faseg_rt.cli.args import lexicon_arg
from faseg_rt.eval.caption_presence import SPLITS
from faseg_rt.eval.datasets.registry import DATASETS


def register(subparsers) -> None:
    """Add `eval-candidates` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "eval-candidates",
        description="Precision / recall of class presence of the classes each caption names "
                    "(and of published candidate lists, and of both united) against per-image "
                    "ground-truth class lists; no images or model needed.")
    p.add_argument("--dataset", required=True, choices=DATASETS,
                   help="whose vocabulary the class lists and captions are matched against")
    p.add_argument("--captions", required=True, type=Path, help="JSON image id -> caption")
    p.add_argument("--groundtruth", required=True, type=Path,
                   help="JSON image id -> space-separated classes present (the images scored)")
    p.add_argument("--published", type=Path, default=None,
                   help="JSON image id -> space-separated candidate classes to score beside")
    p.add_argument("--lexicon", type=Path, default=None,
                   help="JSON or YAML {class: [words]} extending the built-in lexicon")
    p.add_argument("--split", choices=SPLITS, default="all",
                   help="score all images, or one half by a fixed hash of the image id: "
                        "'tuning' (lexicon changes are judged here) or 'held-out' (reported)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.set_defaults(func=cmd_eval_candidates)


#: Above this share of words naming no class, a "ground truth" file holds no class lists.
NOT_CLASS_LISTS = 0.5


def check_roles(args, captions, raw_truth, classes, aliases) -> None:
    """Refuse a ground-truth file that holds no class lists (most of its words name no class of
    the dataset), saying the two files look swapped when the captions file holds class lists:
    scored as given they would print numbers that mean nothing, with exit 0."""
    from faseg_rt.errors import InvalidInputError
    from faseg_rt.eval.caption_presence import unknown_words

    share, words = unknown_words(raw_truth, classes, aliases)
    if share <= NOT_CLASS_LISTS:
        return
    example = ", ".join(repr(w) for w in words[:3])
    caption_share, _ = unknown_words(captions, classes, aliases)
    if captions and caption_share < 1 - NOT_CLASS_LISTS:
        raise InvalidInputError(
            f"--captions {args.captions} holds class lists and --groundtruth {args.groundtruth} "
            f"holds sentences ({share:.0%} of its words name no {args.dataset} class, e.g. "
            f"{example}): the two files look swapped; pass the captions as --captions and the "
            "class lists as --groundtruth")
    raise InvalidInputError(
        f"--groundtruth {args.groundtruth} does not hold class lists: {share:.0%} of its words name "
        f"no {args.dataset} class (e.g. {example}); give JSON image id -> space-separated class "
        "names of the dataset")


def cmd_eval_candidates(args: argparse.Namespace) -> int:
    """Handler of `faseg-rt eval-candidates`."""
    from faseg_rt.eval.caption_presence import (caption_presence, dataset_vocabulary,
                                                in_split, parse_class_lists, presence_table)
    from faseg_rt.eval.inputs import read_id_string_json
    from faseg_rt.io import atomic_write_json

    classes, aliases = dataset_vocabulary(args.dataset)
    captions = read_id_string_json(args.captions, "captions")
    raw_truth = read_id_string_json(args.groundtruth, "ground truth")
    check_roles(args, captions, raw_truth, classes, aliases)
    truth, unknown = parse_class_lists(raw_truth, classes, aliases)
    truth = {i: t for i, t in truth.items() if in_split(i, args.split)}
    published = None
    if args.published is not None:
        published, bad = parse_class_lists(read_id_string_json(args.published, "published"),
                                           classes, aliases)
        unknown |= bad
    lexicon = lexicon_arg(args, classes, what=f"{args.dataset} class")
    result = caption_presence(captions, truth, classes, published, lexicon)
    uncaptioned = sum(1 for i in truth if i not in captions)
    if uncaptioned:
        print(f"note: {uncaptioned} of the {len(truth)} ground-truth images have no caption in "
              f"{args.captions} and are not scored", file=sys.stderr)
    if unknown:
        print(f"note: words matching no {args.dataset} class were left out of the class lists: "
              f"{', '.join(sorted(unknown))}", file=sys.stderr)
    print(presence_table({args.dataset: result}))
    if args.json is not None:
        atomic_write_json(args.json, {args.dataset: result})
    return 0
