"""Recogniser: which classes of a vocabulary are present in an image (zero-shot, multi-label).

    rec = Recognizer.from_pretrained()                 # google/siglip-base-patch16-224
    [r] = rec(["street.jpg"], ["car", "person", "cat"])
    r.candidates, r.scores                             # ("car", "person"), array([.41, .22, 1e-4])

FA-Seg segments only the classes it is told are there: a class absent from the image still gets
a map that min-max normalisation lifts to 1 somewhere, and it steals pixels.  The published
results rely on per-image candidate lists from an external recogniser; this module makes them.

Families (from the checkpoint's config.json model_type; faseg_rt.frontend.encoding feeds each
the inputs it was trained on):
- "siglip": SigLIP (SiglipModel), and the fixed-resolution SigLIP 2 checkpoints
  (google/siglip2-base-patch16-224, ...), which reuse SiglipModel and model_type "siglip".  Those
  are told apart by their tokenizer (Gemma, not SigLIP's SentencePiece): `is_siglip2` is then
  True and prompts are lower-cased first, as SigLIP 2 was trained.
- "siglip2": SigLIP 2 NaFlex (Siglip2Model, e.g. google/siglip2-base-patch16-naflex): each image
  keeps its aspect ratio, resized to at most `max_num_patches` patches (the checkpoint's setting,
  256, unless given) and padded to that count, so images of any sizes share a batch.
- "clip": CLIP (CLIPModel).

Decision rules (a score per class, then the same selection for every family):
- SigLIP and SigLIP 2 (default): p_k = sigmoid(mean_t(exp(s) * cos(image, prompt_kt)) + b) with
  the checkpoint's learnt scale s and bias b: the per-template logits are averaged, and the
  sigmoid applied to that mean.  Both models were trained with exactly this sigmoid as an
  independent per-pair probability, so each template's logit is calibrated as trained and their
  mean stays on that scale; p_k is a multi-label presence probability and several classes can
  be near 1 at once.  (Re-normalising the template-mean embedding, CLIP's ensembling, would
  raise every cosine by a per-class factor the bias was never trained for, and the 0.05
  default would no longer mean what it says.)  The averaged logit equals the cosine with the
  mean of the unit prompt embeddings, so that mean, not re-normalised, is the cached embedding.
- CLIP: p_k = softmax over the vocabulary and one "none of these" option, exp(s) * cos(image,
  .), of which the K class shares are the scores.  CLIP was trained with this softmax over
  competing captions; the extra option is a null text (NULL_PROMPTS: "a photo.", "an empty
  photo.", ... ensembled like a class), so when no class matches better than a plain photo
  the mass goes to "none" instead of to whichever class is least wrong: a vocabulary of one
  class no longer scores 1.0 on a black image.  1 - sum_k p_k is the "none" share.  One
  dominant class still takes most of the mass and two present classes share it, so the
  default threshold is lower, and CLIP suits small vocabularies better than large ones.
Kept candidates: the classes with p_k >= threshold, the `max_candidates` highest if more pass,
returned in vocabulary order.  None passing is a valid answer (an all-background mask).

Class embeddings: each class is filled into the prompt templates (faseg_rt.frontend.templates),
encoded, unit-normalised and averaged over templates (CLIP: normalised again); computed once per
(vocabulary, templates, device, dtype) and cached, so a call costs one vision-encoder pass per
image.  A class name that tokenizes to the tokenizer's unknown token (Chinese or Russian names
for SigLIP's English SentencePiece) is told apart from other such names by nothing: one warning
names them and the checkpoints that read them.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from faseg_rt import rules
from faseg_rt.devices import default_device_dtype
from faseg_rt.errors import InvalidInputError
from faseg_rt.images import load_image
from faseg_rt.rules import normalize_classes
from faseg_rt.frontend.base import FrontEndModel
from faseg_rt.frontend.checkpoints import checkpoint_dir, load, model_type
from faseg_rt.frontend.candidates import select  # noqa: F401 (re-exported; numpy only, eval reads it)
from faseg_rt.frontend.defaults import DEFAULT_MAX_CANDIDATES, DEFAULT_RECOGNIZER  # noqa: F401 (re-exported)
from faseg_rt.frontend.encoding import (FAMILIES, check_max_num_patches, image_inputs, model_class,
                                        text_inputs, text_rule, unknown_token_names)
from faseg_rt.frontend.templates import NULL_PROMPTS, check_templates, fill

#: Default thresholds per family.  SigLIP: its sigmoid is conservative on prompt-style text (the
#: model card's example gives 0.32 to a correct "a photo of 2 cats" and ~0 to wrong prompts);
#: 0.05 keeps secondary objects while leaving absent classes, which sit orders of magnitude
#: lower.  CLIP: a softmax share; 0.10 keeps a class that holds a tenth of the mass.  Both are
#: starting points: `faseg-rt eval --candidates auto` prints precision and recall per threshold
#: so a user can pick one on their data (README, "How to choose the threshold").  SigLIP 2 (NaFlex
#: "siglip2", and fixed-resolution checkpoints, which are "siglip"): 0.05 for the same reason, as
#: it is trained with the same sigmoid loss and learnt bias (not yet measured on real checkpoints).
DEFAULT_THRESHOLD = {"siglip": 0.05, "siglip2": 0.05, "clip": 0.10}

_SUPPORTED = {family: label for family, (_, label) in FAMILIES.items()}


@dataclass(frozen=True)
class Recognition:
    """The recogniser's answer for one image.

    classes: the vocabulary (K names, the caller's order); scores: (K,) float32 probability of
    each class (rule per family, module docstring); candidates: the kept names, vocabulary order.
    """

    classes: tuple[str, ...]
    scores: np.ndarray
    candidates: tuple[str, ...]

    @property
    def indices(self) -> tuple[int, ...]:
        """0-based vocabulary positions of the kept candidates (label = index + 1)."""
        pos = {c: i for i, c in enumerate(self.classes)}
        return tuple(pos[c] for c in self.candidates)

    def score_dict(self) -> dict[str, float]:
        return {c: float(s) for c, s in zip(self.classes, self.scores)}


class Recognizer(FrontEndModel):
    """Zero-shot multi-label class presence with a SigLIP, SigLIP 2 or CLIP checkpoint.

    model: a SiglipModel, Siglip2Model or CLIPModel in eval mode; processor: its processor;
    family: "siglip", "siglip2" or "clip" (module docstring); templates: prompt templates (None:
    the default ensemble); null_prompts: CLIP's "none of these" texts (None: NULL_PROMPTS);
    threshold, max_candidates: the default selection (None threshold: the
    family's default); max_num_patches: NaFlex ("siglip2") only, the patch budget per image
    (None: the checkpoint's image processor setting).
    """

    def __init__(self, model, processor, family: str, *, templates: Sequence[str] | None = None,
                 threshold: float | None = None, max_candidates: int = DEFAULT_MAX_CANDIDATES,
                 max_num_patches: int | None = None, name: str | None = None, cache_size: int = 8,
                 null_prompts: Sequence[str] | None = None):
        if family not in _SUPPORTED:
            raise InvalidInputError(f"recogniser family must be one of {', '.join(_SUPPORTED)}, got {family!r}")
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.family = family
        self.text_rule = text_rule(family, model, processor.tokenizer)
        self.max_num_patches = check_max_num_patches(max_num_patches, family)
        self.templates = check_templates(templates)
        self.null_prompts = _check_null_prompts(null_prompts)
        self.threshold = rules.threshold(DEFAULT_THRESHOLD[family] if threshold is None else threshold)
        self.max_candidates = rules.max_candidates(max_candidates)
        self.name = name
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, id_or_dir: str | os.PathLike = DEFAULT_RECOGNIZER, *, device=None,
                        dtype=None, **kw) -> "Recognizer":
        """Load a SigLIP, SigLIP 2 or CLIP checkpoint (hub id or save_pretrained directory).

        The family comes from the checkpoint's config (model_type); anything else is refused.
        Keyword arguments go to the constructor (templates, threshold, max_candidates,
        max_num_patches).
        """
        from transformers import AutoProcessor

        device, dtype = default_device_dtype(device, dtype)
        path = checkpoint_dir(id_or_dir, "recogniser")
        family = model_type(path, "recogniser", _SUPPORTED)
        check_max_num_patches(kw.get("max_num_patches"), family)  # before the weights load
        processor = load(AutoProcessor, path, "recogniser processor")
        model = load(model_class(family), path, "recogniser", dtype=dtype)
        return cls(model.to(device), processor, family, name=str(id_or_dir), **kw)

    @property
    def is_siglip2(self) -> bool:
        """True for SigLIP 2: NaFlex, or a "siglip" checkpoint with a Gemma tokenizer."""
        return self.family == "siglip2" or (self.family == "siglip" and self.text_rule.lowercase)

    @staticmethod
    def check(id_or_dir) -> str:
        """The family ("siglip", "siglip2" or "clip") of a reachable recogniser checkpoint, else
        ModelLoadError (reads config.json only, so a fixed-resolution SigLIP 2 says "siglip")."""
        return model_type(checkpoint_dir(id_or_dir, "recogniser"), "recogniser", _SUPPORTED)

    def _moved(self) -> None:
        with self._lock:  # the keys would miss anyway; this frees the old device's tensors
            self._cache.clear()

    # ------------------------------------------------------------------ embeddings
    def _cached(self, key, make):
        """The cache entry for key, made (outside the lock) on a miss; LRU over cache_size.
        Keys hold the device and dtype, so a moved model never reads another device's tensors."""
        key = key + (str(self.device), self.dtype)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        value = make()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value

    def text_embeddings(self, classes: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """(K, D) float32 class embeddings: the mean over templates of the unit prompt
        embeddings (CLIP: normalised again); cached per (vocabulary, templates, device, dtype)."""
        classes = normalize_classes(classes)

        def make():
            self._warn_unknown(classes)
            return self._ensemble(fill(self.templates, classes), len(classes), batch_size)

        return self._cached((classes, self.templates), make)

    def null_embedding(self) -> torch.Tensor:
        """(1, D) float32 unit embedding of CLIP's "none of these" option (NULL_PROMPTS, ensembled)."""
        return self._cached(("<none>", self.null_prompts),
                            lambda: _unit(self._ensemble(list(self.null_prompts), 1, 256)))

    def _ensemble(self, prompts: list[str], k: int, batch_size: int) -> torch.Tensor:
        """(k, D): prompts (k * T, class-major) encoded, unit, averaged per class (CLIP: unit)."""
        feats = [self._encode_text(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)]
        mean = _unit(torch.cat(feats)).reshape(k, len(prompts) // k, -1).mean(1)   # (k, D)
        return _unit(mean) if self.family == "clip" else mean

    def _warn_unknown(self, classes: tuple[str, ...]) -> None:
        with self._lock:
            unknown = unknown_token_names(self.processor.tokenizer, classes, self.text_rule)
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:8]) + (" ..." if len(unknown) > 8 else "")
            warnings.warn(f"recogniser {self.name or self.family}: {len(unknown)} class name(s) "
                          f"tokenize to unknown tokens ({shown}), so their scores cannot tell them "
                          "apart; use a checkpoint whose tokenizer reads them: SigLIP 2 (e.g. "
                          "google/siglip2-base-patch16-224) or a multilingual CLIP", stacklevel=4)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        # padding, mask and case as the family was trained (faseg_rt.frontend.encoding)
        with self._lock:
            inputs = text_inputs(self.processor.tokenizer, texts, self.text_rule)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            return _features(self.model.get_text_features(**inputs)).float()

    def image_embeddings(self, images: Sequence) -> torch.Tensor:
        """(B, D) float32 unit image embeddings (one vision-encoder pass for the batch)."""
        pil = [load_image(x) for x in images]
        inputs = image_inputs(self.processor.image_processor, self.family, pil, self.device,
                              self.dtype, self.max_num_patches)
        with torch.inference_mode():
            out = self.model.get_image_features(**inputs)
        return _unit(_features(out).float())

    # ------------------------------------------------------------------ scores
    def probabilities(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(B, K) probabilities from (B, D) unit image and (K, D) class embeddings (rule per
        family, module docstring; CLIP's softmax includes the "none" option, dropped after)."""
        scale = self.model.logit_scale.float().exp()
        if self.family != "clip":  # SigLIP and SigLIP 2
            return torch.sigmoid(image_emb @ text_emb.T * scale + self.model.logit_bias.float())
        rows = torch.cat([text_emb, self.null_embedding()])                     # (K + 1, D)
        return torch.softmax(image_emb @ rows.T * scale, dim=-1)[:, :-1]

    def scores(self, images: Sequence, classes: Sequence[str], batch_size: int = 8) -> np.ndarray:
        """(B, K) float32 probability of each class in each image."""
        text = self.text_embeddings(classes)
        out = [self.probabilities(self.image_embeddings(images[i:i + batch_size]), text)
               for i in range(0, len(images), batch_size)]
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, len(text)), np.float32)

    def __call__(self, images: Sequence, classes: Sequence[str], *, threshold: float | None = None,
                 max_candidates: int | None = None, batch_size: int = 8) -> list[Recognition]:
        """Scores and kept candidates for each image (paths, PIL images, arrays or bytes)."""
        images = self._check_batch(images, batch_size, "Recognizer")
        thr = self.threshold if threshold is None else rules.threshold(threshold)
        top = self.max_candidates if max_candidates is None else rules.max_candidates(max_candidates)
        classes = normalize_classes(classes)
        probs = self.scores(images, classes, batch_size)
        return [Recognition(classes, p, tuple(classes[i] for i in select(p, thr, top))) for p in probs]


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output with pooler_output (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _check_null_prompts(prompts) -> tuple[str, ...]:
    if prompts is None:
        return NULL_PROMPTS
    out = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    if not out or not all(isinstance(p, str) and p.strip() for p in out):
        raise InvalidInputError("null_prompts must be non-empty texts, e.g. ['a photo.']")
    return out
