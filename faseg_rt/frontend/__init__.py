"""What FA-Seg needs before it runs, for raw photos: a caption (BLIP) and the candidate classes
present in each image (a SigLIP, SigLIP 2 or CLIP recogniser), loaded on first use by the Segmenter,
and the classes a caption names (`classes_in_caption`, a lexicon matcher with no model).

The names below are imported when first read (module __getattr__): importing a light submodule
(input_files, caption_classes, defaults) must not import torch and transformers, which the
captioner and the recogniser need, so the command line checks its arguments at once."""

import importlib
from typing import TYPE_CHECKING

from faseg_rt.frontend.defaults import DEFAULT_CAPTIONER, DEFAULT_RECOGNIZER

if TYPE_CHECKING:  # what _LAZY loads, for linters and type checkers (never at run time)
    from faseg_rt.frontend.caption_classes import classes_in_caption, load_lexicon
    from faseg_rt.frontend.captioner import Captioner
    from faseg_rt.frontend.recognizer import Recognition, Recognizer

#: public name -> the submodule that defines it
_LAZY = {"classes_in_caption": "caption_classes", "load_lexicon": "caption_classes",
         "Captioner": "captioner", "Recognizer": "recognizer", "Recognition": "recognizer"}

__all__ = ["Captioner", "Recognizer", "Recognition", "DEFAULT_CAPTIONER", "DEFAULT_RECOGNIZER",
           "classes_in_caption", "load_lexicon"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"faseg_rt.frontend.{_LAZY[name]}"), name)
