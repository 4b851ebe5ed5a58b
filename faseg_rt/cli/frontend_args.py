"""The front-end options shared by `segment`, `label` and `eval`.

    --caption auto            BLIP caption per image (eval spells it --captions; both work there)
    --captions FILE           segment / label: JSON image -> caption (eval's shape)
    --candidates MODE|FILE    auto (caption-named + recogniser), caption, recognizer (or
                              recogniser), or a JSON file image -> candidate classes (eval also
                              takes gt); a word that is neither is refused with the modes listed
    --lexicon FILE            JSON / YAML {class: [words]}: more words naming classes in captions
    --captioner ID_OR_DIR     default Salesforce/blip-image-captioning-large
    --recognizer ID_OR_DIR    default google/siglip-base-patch16-224 (SigLIP, SigLIP 2 or CLIP)
    --candidate-threshold X   in [0, 1]; default per recogniser family (SigLIP / SigLIP 2 0.05,
                              CLIP 0.10)
    --max-candidates N        >= 1; the recogniser's classes per image (default 6)
    --exif-transpose          segment / label: apply EXIF orientation first (photos)

The models load only when a mode asks for them, so the flags cost nothing otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from faseg_rt import rules
from faseg_rt.cli.args import lexicon_arg, positive_int_arg, threshold_arg
from faseg_rt.frontend.candidates import AUTO, MODES, uses_caption, uses_recognizer
from faseg_rt.frontend.defaults import DEFAULT_CAPTIONER, DEFAULT_MAX_CANDIDATES, DEFAULT_RECOGNIZER

CANDIDATES_HELP = ("auto: the classes each image's caption names plus the recogniser's; caption: "
                   "the caption's only; recognizer (or recogniser): the recogniser's only; or a JSON file image -> "
                   "candidate classes (labels still index --classes)")


def candidates_arg(text: str, extra: tuple[str, ...] = ()):
    """argparse type for --candidates: a mode (canonical: "recogniser" -> "recognizer"; `extra`:
    a command's own modes) or a JSON file path.  A word that is neither a mode nor an existing
    file, nor looks like a file name (a suffix or a folder in it), is a usage error listing the
    modes ("atuo": did you mean 'auto'?) rather than "candidates file atuo not found"."""
    if text in extra:
        return text
    mode = rules.candidate_mode(text)
    if mode is not None:
        return mode
    path = Path(text)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither a mode ({rules.modes_text(extra)}) nor an existing file"
        f"{rules.did_you_mean(text, (*MODES, *extra))}")


def add_frontend_args(p: argparse.ArgumentParser, *, candidates: bool = True,
                      loaded_at_start: bool = False) -> None:
    """--captioner, --recognizer, --candidate-threshold, --max-candidates, --lexicon (and
    --candidates unless the command defines its own).  loaded_at_start (serve): no default
    captioner / recogniser; one is loaded at start when named, and requests needing a missing
    one are refused."""
    if candidates:
        p.add_argument("--candidates", type=candidates_arg, default=None, metavar="MODE|FILE",
                       help=CANDIDATES_HELP)
    if loaded_at_start:
        p.add_argument("--captioner", default=None, metavar="ID_OR_DIR",
                       help=f"BLIP captioning checkpoint, loaded at start, for caption=auto (e.g. "
                            f"{DEFAULT_CAPTIONER}; default none: caption=auto is refused)")
        p.add_argument("--recognizer", default=None, metavar="ID_OR_DIR",
                       help=f"SigLIP, SigLIP 2 or CLIP checkpoint, loaded at start, for candidates="
                            f"auto / recognizer (e.g. {DEFAULT_RECOGNIZER}; default none)")
    else:
        p.add_argument("--captioner", default=DEFAULT_CAPTIONER, metavar="ID_OR_DIR",
                       help=f"BLIP captioning checkpoint for --caption auto (default {DEFAULT_CAPTIONER})")
        p.add_argument("--recognizer", default=DEFAULT_RECOGNIZER, metavar="ID_OR_DIR",
                       help=f"SigLIP, SigLIP 2 or CLIP checkpoint for --candidates auto / recognizer "
                            f"(default {DEFAULT_RECOGNIZER})")
    p.add_argument("--candidate-threshold", type=threshold_arg, default=None, metavar="X",
                   help="keep classes whose probability is >= X (default: SigLIP / SigLIP 2 0.05, CLIP 0.10)")
    p.add_argument("--max-candidates", type=positive_int_arg, default=None, metavar="N",
                   help=f"the recogniser keeps at most N classes per image (default "
                        f"{DEFAULT_MAX_CANDIDATES}; caption-named classes come on top)")
    p.add_argument("--lexicon", type=Path, default=None, metavar="FILE",
                   help="JSON or YAML {class: [words]}: more words that name a class in a caption")


def add_image_file_args(p: argparse.ArgumentParser, caption_group) -> None:
    """--captions FILE (in the group that holds --caption) and --exif-transpose (segment and
    label)."""
    caption_group.add_argument("--captions", type=Path, default=None, metavar="FILE",
                               help="JSON image file name (or stem) -> caption, one per image")
    p.add_argument("--exif-transpose", action="store_true",
                   help="turn each image as its EXIF orientation says before anything else "
                        "(phone photos); off: masks align with the stored pixels, as datasets expect")


def path_or_auto(text: str):
    """argparse type for eval's --captions: 'auto' or a JSON file path."""
    return AUTO if text == AUTO else Path(text)


def _mode(args):
    value = getattr(args, "candidates", None)
    return value if isinstance(value, str) else None


def _needs_captioner(args, caption_attr: str) -> bool:
    caption = getattr(args, caption_attr, None)
    given = caption is not None or getattr(args, "captions", None) is not None
    return caption == AUTO or (uses_caption(_mode(args)) and not given)


def frontend_meta(args, caption_attr: str = "captions") -> dict:
    """The front-end settings that change the output (recorded with the run; {} when unused):
    the thresholds are those actually applied (the family default when none was given)."""
    from faseg_rt.frontend.recognizer import DEFAULT_THRESHOLD, Recognizer

    meta = {}
    if _needs_captioner(args, caption_attr):
        meta["captioner"] = str(args.captioner)
    if uses_recognizer(_mode(args)):
        threshold = args.candidate_threshold
        if threshold is None:
            threshold = DEFAULT_THRESHOLD[Recognizer.check(args.recognizer)]
        meta.update(recognizer=str(args.recognizer), candidate_threshold=threshold,
                    max_candidates=args.max_candidates or DEFAULT_MAX_CANDIDATES)
    if uses_caption(_mode(args)) and getattr(args, "lexicon", None) is not None:
        lexicon = json.dumps(lexicon_arg(args), sort_keys=True).encode()
        meta["lexicon"] = f"{args.lexicon} (sha256 {hashlib.sha256(lexicon).hexdigest()[:16]})"
    return meta


def check_frontend(args, caption_attr: str = "caption", classes=None) -> None:
    """Refuse, before any model loads, a front-end checkpoint that cannot be had or is of the
    wrong family, when the command asks for it, and a bad lexicon; reads config.json only."""
    from faseg_rt.frontend.captioner import Captioner
    from faseg_rt.frontend.recognizer import Recognizer

    lexicon_arg(args, classes)
    if _needs_captioner(args, caption_attr):
        Captioner.check(args.captioner)
    if uses_recognizer(_mode(args)):
        Recognizer.check(args.recognizer)
