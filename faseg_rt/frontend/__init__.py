"""What FA-Seg needs before it runs, for raw photos: a caption (BLIP) and the candidate classes
present in each image (a SigLIP, SigLIP 2 or CLIP recogniser), loaded on first use by the Segmenter,
and the classes a caption names (`classes_in_caption`, a lexicon matcher with no model)."""

from faseg_rt.frontend.caption_classes import classes_in_caption, load_lexicon
from faseg_rt.frontend.captioner import DEFAULT_CAPTIONER, Captioner
from faseg_rt.frontend.recognizer import DEFAULT_RECOGNIZER, Recognition, Recognizer

__all__ = ["Captioner", "Recognizer", "Recognition", "DEFAULT_CAPTIONER", "DEFAULT_RECOGNIZER",
           "classes_in_caption", "load_lexicon"]
