"""What the segmenter runs for each image once the front end has answered: caption and classes.

The Segmenter owns one `FrontEnd`: the captioner and recogniser ids (or loaded objects), loaded
on first use onto the segmenter's device in the dtypes its precision policy gives them
(faseg_rt.precision: the captioner and recognizer rows), so a caller who never asks for them
pays nothing.  A Captioner or Recognizer passed in loaded runs where and as it was loaded.
`FrontEnd.plan` turns each image's (vocabulary, caption, candidates) request into an
`ImagePlan`:

    caption:    None | "auto" | a string       "auto": the BLIP caption of the image
    candidates: None | "auto" | "caption" | "recognizer" | names
                (faseg_rt.frontend.candidates: the modes, their order and sources)

A mode that reads the caption ("auto", "caption") on an image without one has the captioner
write it, and that caption is then also the UNet prompt: the classes a caption names are
segmented with that caption, as in the published recipe.

The method then runs on `plan.segment` only (in the order the mode gives), and `plan.finish`
maps its labels back to the vocabulary (label k = vocabulary[k - 1] whatever subset ran, in
whatever order), so masks of different images share one palette.  An image with no class to
segment never reaches the networks: its mask is all background.
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
from faseg_rt.frontend.caption_classes import classes_in_caption
from faseg_rt.frontend.candidates import (AUTO, GIVEN, by_score, check_candidates, check_lexicon,
                                          combine, given_candidates, uses_caption,
                                          uses_recognizer)
from faseg_rt.frontend.captioner import DEFAULT_CAPTIONER, Captioner
from faseg_rt.frontend.recognizer import DEFAULT_RECOGNIZER, Recognizer

__all__ = ["AUTO", "FrontEnd", "ImagePlan", "given_candidates", "one_per_image"]


@dataclass(frozen=True)
class ImagePlan:
    """One image's request after the front end: what to segment and what to report.

    vocabulary: the K class names labels index; segment: the classes the method runs on, in
    class-prompt order (faseg_rt.frontend.candidates); caption: the UNet prompt (None: no
    caption); candidates: kept or given names (None: the whole vocabulary was asked for);
    class_scores: (K,) recogniser probabilities (None when it did not run); captioner /
    recognizer: the ids that produced the caption / candidates (None when not used); sources:
    candidate -> where it came from ("caption", "recognizer", "given"); selection: the
    recogniser's threshold and max_candidates actually applied (None when it did not run).
    """

    vocabulary: tuple[str, ...]
    segment: tuple[str, ...]
    caption: str | None
    candidates: tuple[str, ...] | None = None
    class_scores: np.ndarray | None = None
    captioner: str | None = None
    recognizer: str | None = None
    sources: dict | None = None
    selection: dict | None = None

    def finish(self, result: SegmentationResult | None, image, threshold: float,
               image_size: int) -> SegmentationResult:
        """The result over the vocabulary: labels remapped, front-end fields filled in.

        result: the method's result over `self.segment` (None when nothing was segmented: an
        all-background mask of the image's size and (0, image_size, image_size) scores).
        """
        extra = dict(candidates=self.candidates, class_scores=self.class_scores,
                     captioner=self.captioner, recognizer=self.recognizer, sources=self.sources,
                     selection=self.selection)
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
    Recognizer (used as loaded: never moved nor cast).  candidate_threshold / max_candidates:
    the recogniser's selection rule (None: its defaults; max_candidates caps the recogniser's
    classes, not the caption's).  generation: captioner generation overrides.  lexicon:
    {class: [words]} extending the built-in words that name each class in a caption
    (faseg_rt.frontend.caption_classes).
    """

    def __init__(self, captioner=DEFAULT_CAPTIONER, recognizer=DEFAULT_RECOGNIZER, *,
                 candidate_threshold: float | None = None, max_candidates: int | None = None,
                 generation: dict | None = None, lexicon: dict | None = None):
        self._specs = {"captioner": captioner, "recognizer": recognizer}
        self.candidate_threshold = (None if candidate_threshold is None
                                    else rules.threshold(candidate_threshold, "candidate_threshold"))
        self.max_candidates = None if max_candidates is None else rules.max_candidates(max_candidates)
        self.generation = generation
        self.lexicon = check_lexicon(lexicon)
        self._loaded: dict = {k: v for k, v in self._specs.items()
                              if isinstance(v, (Captioner, Recognizer))}
        self._given = frozenset(self._loaded)  # the caller's objects: never moved nor cast
        self._lock = threading.Lock()

    def _get(self, what: str, device, dtype):
        """The captioner / recogniser; one this front end loads goes to `device` and `dtype`
        (the segmenter's device and its policy's row for `what`)."""
        with self._lock:
            model = self._loaded.get(what)
            if model is None:
                spec = self._specs[what]
                if spec is None:
                    raise InvalidInputError(f"the {what} is needed (caption or candidates asked "
                                            f"for it) but this segmenter has none: pass "
                                            f"{what}=ID_OR_DIR to from_pretrained")
                if what == "captioner":
                    model = Captioner.from_pretrained(spec, device=device, dtype=dtype,
                                                      generation=self.generation)
                else:
                    model = Recognizer.from_pretrained(spec, device=device, dtype=dtype)
                self._loaded[what] = model
            elif what not in self._given and (not _same_device(model.device, device)
                                              or model.dtype != dtype):
                model.to(device, dtype)  # the segmenter moved (Segmenter.to)
        return model

    def captioner(self, device, dtype) -> Captioner:
        return self._get("captioner", device, dtype)

    def recognizer(self, device, dtype) -> Recognizer:
        return self._get("recognizer", device, dtype)

    def _captions(self, images, captions, candidates, device, precision, batch_size):
        """Each image's caption, the captioner's where asked for or where a mode needs one; and
        the captioner's id (None when it did not run) with the indices it captioned."""
        caps = list(captions)
        todo = [i for i, (c, m) in enumerate(zip(caps, candidates))
                if (isinstance(c, str) and c == AUTO) or (c is None and uses_caption(m))]
        if not todo:
            return caps, None, set()
        model = self.captioner(device, precision["captioner"])
        with stage("caption", device):
            for i, text in zip(todo, model([images[i] for i in todo], batch_size)):
                caps[i] = text or None  # an empty caption is no caption
        return caps, model.name, set(todo)

    def _recognise(self, images, vocabularies, candidates, device, precision, batch_size):
        """{image index: (kept names by decreasing score, (K,) scores)} for the images whose
        mode uses the recogniser, its id and the selection rule it applied."""
        todo = [i for i, m in enumerate(candidates) if uses_recognizer(m)]
        if not todo:
            return {}, None, None
        rec = self.recognizer(device, precision["recognizer"])
        selection = {"candidate_threshold": (rec.threshold if self.candidate_threshold is None
                                             else self.candidate_threshold),
                     "max_candidates": (rec.max_candidates if self.max_candidates is None
                                        else self.max_candidates)}
        out: dict[int, tuple] = {}
        with stage("recognise", device):
            for vocab in dict.fromkeys(vocabularies[i] for i in todo):
                idx = [i for i in todo if vocabularies[i] == vocab]
                answers = rec([images[i] for i in idx], vocab,
                              threshold=selection["candidate_threshold"],
                              max_candidates=selection["max_candidates"], batch_size=batch_size)
                out.update({i: (by_score(a.candidates, a.classes, a.scores), a.scores)
                            for i, a in zip(idx, answers)})
        return out, rec.name, selection

    def plan(self, images: Sequence, vocabularies: Sequence[tuple[str, ...]],
             captions: Sequence, candidates: Sequence, *, device, precision,
             batch_size: int = 8) -> list[ImagePlan]:
        """One ImagePlan per (decoded) image; runs the captioner / recogniser, batched, where an
        image's caption or candidate mode needs them.  precision: the segmenter's policy (the
        dtypes of the models this front end loads)."""
        candidates = [check_candidates(c) for c in candidates]
        caps, cap_name, captioned = self._captions(images, captions, candidates, device, precision,
                                                   batch_size)
        recognised, rec_name, selection = self._recognise(images, vocabularies, candidates,
                                                          device, precision, batch_size)
        plans = []
        for i, (vocab, mode) in enumerate(zip(vocabularies, candidates)):
            common = dict(caption=caps[i], captioner=cap_name if i in captioned else None)
            if mode is None:
                plans.append(ImagePlan(vocab, vocab, **common))
            elif not isinstance(mode, str):
                kept = given_candidates(mode, vocab)
                plans.append(ImagePlan(vocab, kept, candidates=kept,
                                       sources={c: (GIVEN,) for c in kept}, **common))
            else:
                named = ()
                if uses_caption(mode) and caps[i]:
                    named = classes_in_caption(caps[i], vocab, self.lexicon)
                found, scores = recognised.get(i, ((), None))
                kept, sources = combine(mode, named, found)
                on = i in recognised
                plans.append(ImagePlan(vocab, kept, candidates=kept, class_scores=scores,
                                       recognizer=rec_name if on else None, sources=sources,
                                       selection=selection if on else None, **common))
        return plans


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


def one_per_image(value, n: int, what: str, modes: Sequence[str] = (AUTO,)) -> list:
    """None / a mode for every image, or one entry per image (a list of length n)."""
    if isinstance(value, str) and rules.CANDIDATE_MODE_ALIASES.get(value) in modes:
        value = rules.CANDIDATE_MODE_ALIASES[value]  # "recogniser"
    if value is None or (isinstance(value, str) and value in modes):
        return [value] * n
    if isinstance(value, str):
        named = ", ".join(repr(m) for m in modes)
        raise InvalidInputError(f"{what} must be None, {named} or one entry per image; for one "
                                f"image use seg(image, ...) (got the string {value!r})")
    value = list(value)
    if len(value) != n:
        raise InvalidInputError(f"got {len(value)} {what} for {n} images")
    return value
