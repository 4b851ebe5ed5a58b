"""The front-end options shared by `segment`, `label` and `eval` (issue 12).

    --caption auto            BLIP caption per image (eval spells it --captions; both work there)
    --candidates auto         the recogniser's kept classes per image
    --captioner ID_OR_DIR     default Salesforce/blip-image-captioning-large
    --recognizer ID_OR_DIR    default google/siglip-base-patch16-224 (SigLIP, SigLIP 2 or CLIP)
    --candidate-threshold X   in [0, 1]; default per recogniser family (SigLIP / SigLIP 2 0.05,
                              CLIP 0.10)
    --max-candidates N        >= 1; default 6

The models load only when "auto" is asked for, so the flags cost nothing otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from faseg_rt.cli.args import positive_int_arg, threshold_arg
from faseg_rt.frontend.captioner import DEFAULT_CAPTIONER
from faseg_rt.frontend.plan import AUTO
from faseg_rt.frontend.recognizer import DEFAULT_MAX_CANDIDATES, DEFAULT_RECOGNIZER


def add_frontend_args(p: argparse.ArgumentParser, *, candidates: bool = True) -> None:
    """--captioner, --recognizer, --candidate-threshold, --max-candidates (and --candidates
    auto unless the command defines its own --candidates)."""
    if candidates:
        p.add_argument("--candidates", choices=[AUTO], default=None,
                       help="'auto': segment only the classes the recogniser finds in each image "
                            "(labels still index --classes)")
    p.add_argument("--captioner", default=DEFAULT_CAPTIONER, metavar="ID_OR_DIR",
                   help=f"BLIP captioning checkpoint for --caption auto (default {DEFAULT_CAPTIONER})")
    p.add_argument("--recognizer", default=DEFAULT_RECOGNIZER, metavar="ID_OR_DIR",
                   help=f"SigLIP, SigLIP 2 or CLIP checkpoint for --candidates auto (default {DEFAULT_RECOGNIZER})")
    p.add_argument("--candidate-threshold", type=threshold_arg, default=None, metavar="X",
                   help="keep classes whose probability is >= X (default: SigLIP / SigLIP 2 0.05, CLIP 0.10)")
    p.add_argument("--max-candidates", type=positive_int_arg, default=None, metavar="N",
                   help=f"keep at most N classes per image (default {DEFAULT_MAX_CANDIDATES})")


def path_or_auto(text: str):
    """argparse type for eval's --captions / --candidates: 'auto' or a JSON file path."""
    return AUTO if text == AUTO else Path(text)


def frontend_meta(args, caption_attr: str = "captions") -> dict:
    """The front-end settings that change the output (recorded with the run; {} when unused)."""
    meta = {}
    if getattr(args, caption_attr, None) == AUTO:
        meta["captioner"] = str(args.captioner)
    if getattr(args, "candidates", None) == AUTO:
        meta.update(recognizer=str(args.recognizer), candidate_threshold=args.candidate_threshold,
                    max_candidates=args.max_candidates)
    return meta


def check_frontend(args, caption_attr: str = "caption") -> None:
    """Refuse, before any model loads, a front-end checkpoint that cannot be had or is of the
    wrong family, when the command asks for it ("auto"); reads config.json only."""
    from faseg_rt.frontend.captioner import Captioner
    from faseg_rt.frontend.recognizer import Recognizer

    if getattr(args, caption_attr, None) == AUTO:
        Captioner.check(args.captioner)
    if getattr(args, "candidates", None) == AUTO:
        Recognizer.check(args.recognizer)
