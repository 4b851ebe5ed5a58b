"""The front end's default checkpoints and counts, in a module that imports nothing, so the
command line can show them in --help and check its flags without importing torch or
transformers (captioner.py and recognizer.py re-export them)."""

#: BLIP-1 large captioning model (ViT-L/16 at 384 px + BERT-base decoder), as in the paper.
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-large"

#: SigLIP base, 224 px, patch 16: the smallest SigLIP (203 M parameters), transformers' default
#: SiglipConfig.  Larger members (google/siglip-so400m-patch14-384) are drop-in and better.
DEFAULT_RECOGNIZER = "google/siglip-base-patch16-224"

#: The recogniser's classes per image (caption-named classes come on top).  The published lists
#: hold at most 6 classes on VOC (mean 1.4), 9 on Context (mean 2.6) and 13 on COCO-Object (mean
#: 1.9), and 6 or fewer on 99.7 % of Context and 99.1 % of COCO-Object images: 6 keeps nearly
#: every real list's length while bounding what a low threshold can add.
DEFAULT_MAX_CANDIDATES = 6
