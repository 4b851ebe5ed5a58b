"""The front-end options shared by `segment`, `label` and `eval` (issue 12).

    --caption auto            BLIP caption per image (eval spells it --captions; both work there)
    --candidates auto         the recogniser's kept classes per image
    --captioner ID_OR_DIR     default Salesforce/blip-image-captioning-large
    --recognizer ID_OR_DIR    default google/siglip-base-patch16-224 (SigLIP or CLIP checkpoints)
    --candidate-threshold X   in [0, 1]; default per recogniser family (SigLIP 0.05, CLIP 0.10)
    --max-candidates N        >= 1; default 6

The models load only when "auto" is asked for, so the flags cost nothing otherwise.
"""

from __future__ import annotations

import argparse

from faseg_rt.frontend.captioner import DEFAULT_CAPTIONER
from faseg_rt.frontend.recognizer import DEFAULT_MAX_CANDIDATES, DEFAULT_RECOGNIZER

AUTO = "auto"


def candidate_threshold_arg(text: str) -> float:
    """argparse type for --candidate-threshold: a number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"candidate threshold must be a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"candidate threshold must lie in [0, 1], got {v}")
    return v


def max_candidates_arg(text: str) -> int:
    """argparse type for --max-candidates: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"max candidates must be an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"max candidates must be >= 1, got {v}")
    return v


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
                   help=f"SigLIP or CLIP checkpoint for --candidates auto (default {DEFAULT_RECOGNIZER})")
    p.add_argument("--candidate-threshold", type=candidate_threshold_arg, default=None, metavar="X",
                   help="keep classes whose probability is >= X (default: SigLIP 0.05, CLIP 0.10)")
    p.add_argument("--max-candidates", type=max_candidates_arg, default=None, metavar="N",
                   help=f"keep at most N classes per image (default {DEFAULT_MAX_CANDIDATES})")


def frontend_kwargs(args) -> dict:
    """Segmenter.from_pretrained keyword arguments from the parsed flags."""
    return {"captioner": args.captioner, "recognizer": args.recognizer,
            "candidate_threshold": args.candidate_threshold, "max_candidates": args.max_candidates}
