"""What the segmenter runs for each image once the front end has answered: caption and classes.

The Segmenter owns one `FrontEnd`: the captioner and recogniser ids (or loaded objects), loaded
on first use onto the segmenter's device and dtype, so a caller who never asks for "auto" pays
nothing.  `FrontEnd.plan` turns each image's (vocabulary, caption, candidates) request into an
`ImagePlan`:

    caption:    None | "auto" | a string       "auto": the BLIP caption of the image
    candidates: None | "auto" | names           None: segment the whole vocabulary (as before);
                                                "auto": the recogniser's kept classes;
                                                names: that subset of the vocabulary

The method then runs on `plan.segment` only, and `plan.finish` maps its labels back to the
vocabulary (label k = vocabulary[k - 1] whatever subset ran), so masks of different images share
one palette.  An image with no class to segment never reaches the networks: its mask is all
background.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError
from faseg_rt.profiling import stage
from faseg_rt.results import SegmentationResult
from faseg_rt.frontend.captioner import DEFAULT_CAPTIONER, Captioner
from faseg_rt.frontend.recognizer import DEFAULT_RECOGNIZER, Recognizer

AUTO = "auto"


@dataclass(frozen=True)
class ImagePlan:
    """One image's request after the front end: what to segment and what to report.

    vocabulary: the K class names labels index; segment: the classes the method runs on (a
    subset, vocabulary order); caption: the UNet prompt (None: no caption); candidates: kept or
    given names (None: the whole vocabulary was asked for); class_scores: (K,) recogniser
    probabilities (None when it did not run); captioner / recognizer: the ids that produced
    the caption / candidates (None when not used).
    """

    vocabulary: tuple[str, ...]
    segment: tuple[str, ...]
    caption: str | None
    candidates: tuple[str, ...] | None = None
    class_scores: np.ndarray | None = None
    captioner: str | None = None
    recognizer: str | None = None

    def finish(self, result: SegmentationResult | None, image, threshold: float,
               image_size: int) -> SegmentationResult:
        """The result over the vocabulary: labels remapped, front-end fields filled in.

        result: the method's result over `self.segment` (None when nothing was segmented: an
        all-background mask of the image's size and (0, image_size, image_size) scores).
        """
        extra = dict(candidates=self.candidates, class_scores=self.class_scores,
                     captioner=self.captioner, recognizer=self.recognizer)
        if result is None:
            w, h = image.size
            return SegmentationResult(
                labels=np.zeros((h, w), np.int32),
                scores=np.zeros((0, image_size, image_size), np.float32),
                classes=self.vocabulary, threshold=threshold, caption=self.caption, image=image,
                **extra)
        if self.segment != self.vocabulary:
            pos = {c: i + 1 for i, c in enumerate(self.vocabulary)}
            lut = np.array([0] + [pos[c] for c in self.segment], dtype=np.int32)
            result = dataclasses.replace(result, labels=lut[result.labels], classes=self.vocabulary)
        return dataclasses.replace(result, **extra)


class FrontEnd:
    """The captioner and recogniser of a Segmenter, loaded on first use.

    captioner / recognizer: hub id, local directory, or an already loaded Captioner /
    Recognizer.  candidate_threshold / max_candidates: the selection rule (None: the
    recogniser's defaults).  generation: captioner generation overrides.
    """

    def __init__(self, captioner=DEFAULT_CAPTIONER, recognizer=DEFAULT_RECOGNIZER, *,
                 candidate_threshold: float | None = None, max_candidates: int | None = None,
                 generation: dict | None = None):
        self._specs = {"captioner": captioner, "recognizer": recognizer}
        self.candidate_threshold = (None if candidate_threshold is None
                                    else rules.threshold(candidate_threshold, "candidate_threshold"))
        self.max_candidates = None if max_candidates is None else rules.max_candidates(max_candidates)
        self.generation = generation
        self._loaded: dict = {k: v for k, v in self._specs.items()
                              if isinstance(v, (Captioner, Recognizer))}
        self._lock = threading.Lock()

    def _get(self, what: str, device, dtype):
        with self._lock:
            model = self._loaded.get(what)
            if model is None:
                spec = self._specs[what]
                if spec is None:
                    raise InvalidInputError(f"{what} 'auto' was asked for but this segmenter has no "
                                            f"{what}: pass {what}=ID_OR_DIR to from_pretrained")
                if what == "captioner":
                    model = Captioner.from_pretrained(spec, device=device, dtype=dtype,
                                                      generation=self.generation)
                else:
                    model = Recognizer.from_pretrained(spec, device=device, dtype=dtype)
                self._loaded[what] = model
            elif not _same_device(model.device, device) or model.dtype != dtype:
                model.to(device, dtype)  # the segmenter moved (Segmenter.to)
        return model

    def captioner(self, device, dtype) -> Captioner:
        return self._get("captioner", device, dtype)

    def recognizer(self, device, dtype) -> Recognizer:
        return self._get("recognizer", device, dtype)

    def plan(self, images: Sequence, vocabularies: Sequence[tuple[str, ...]],
             captions: Sequence, candidates: Sequence, *, device, dtype,
             batch_size: int = 8) -> list[ImagePlan]:
        """One ImagePlan per (decoded) image; runs the captioner / recogniser, batched, where
        an image asks for "auto"."""
        caps = list(captions)
        auto_caps = [i for i, c in enumerate(caps) if c == AUTO]
        cap_name = None
        if auto_caps:
            model = self.captioner(device, dtype)
            cap_name = model.name
            with stage("caption", device):
                for i, text in zip(auto_caps, model([images[i] for i in auto_caps], batch_size)):
                    caps[i] = text or None  # an empty caption is no caption
        recognized: dict[int, tuple] = {}
        rec_name = None
        auto_cands = [i for i, c in enumerate(candidates) if isinstance(c, str) and c == AUTO]
        if auto_cands:
            rec = self.recognizer(device, dtype)
            rec_name = rec.name
            with stage("recognise", device):
                for vocab in dict.fromkeys(vocabularies[i] for i in auto_cands):
                    idx = [i for i in auto_cands if vocabularies[i] == vocab]
                    answers = rec([images[i] for i in idx], vocab, threshold=self.candidate_threshold,
                                  max_candidates=self.max_candidates, batch_size=batch_size)
                    recognized.update({i: (a.candidates, a.scores) for i, a in zip(idx, answers)})
        plans = []
        for i, vocab in enumerate(vocabularies):
            cand = candidates[i]
            caption_kw = dict(caption=caps[i], captioner=cap_name if i in auto_caps else None)
            if i in recognized:
                kept, scores = recognized[i]
                plans.append(ImagePlan(vocab, kept, candidates=kept, class_scores=scores,
                                       recognizer=rec_name, **caption_kw))
            elif cand is None:
                plans.append(ImagePlan(vocab, vocab, **caption_kw))
            else:
                kept = given_candidates(cand, vocab)
                plans.append(ImagePlan(vocab, kept, candidates=kept, **caption_kw))
        return plans

    def to(self, device, dtype) -> None:
        """Move the loaded models (the others load there on first use)."""
        with self._lock:
            for model in self._loaded.values():
                model.to(device, dtype)


def _same_device(a, b) -> bool:
    """torch.device("cuda") and "cuda:0" name one GPU (a model reports the indexed form): moving
    on every call would also drop the recogniser's cached class embeddings."""
    import torch

    a, b = torch.device(a), torch.device(b)
    if a.type != b.type:
        return False
    if a.type != "cuda" or (a.index is not None and b.index is not None):
        return a.index == b.index
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def given_candidates(names, vocabulary: tuple[str, ...]) -> tuple[str, ...]:
    """An explicit candidate list, checked against the vocabulary, in vocabulary order."""
    if isinstance(names, str):
        raise InvalidInputError(f"candidates must be 'auto', None or a list of class names, got {names!r}")
    canon = {c.lower(): c for c in vocabulary}
    wanted = set()
    for n in names:
        key = " ".join(str(n).split()).lower()
        if key not in canon:
            raise InvalidInputError(f"candidate {n!r} is not in the vocabulary; candidates must be "
                                    "names from classes")
        wanted.add(canon[key])
    return tuple(c for c in vocabulary if c in wanted)


def per_image(value, n: int, what: str) -> list:
    """None / "auto" for every image, or one entry per image (a list of length n)."""
    if value is None or (isinstance(value, str) and value == AUTO):
        return [value] * n
    if isinstance(value, str):
        raise InvalidInputError(f"{what} must be None, 'auto' or one entry per image; for one image "
                                f"use seg(image, ...) (got the string {value!r})")
    value = list(value)
    if len(value) != n:
        raise InvalidInputError(f"got {len(value)} {what} for {n} images")
    return value
