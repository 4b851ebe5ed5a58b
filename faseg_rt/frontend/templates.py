"""Prompt templates for the zero-shot recogniser: an ensemble, averaged per class.

A class name alone is a poor text query for a contrastive image-text model: the models saw
captions, not labels.  Filling the name into several caption-like templates and averaging the
unit-normalised text embeddings (then normalising again) gives one embedding per class that
is less sensitive to any single phrasing; this is the "prompt ensembling" of the CLIP paper
(Radford et al. 2021, section 3.1.4), and it costs nothing per image because the class
embeddings are computed once per vocabulary and cached.

The default set is short on purpose: with a 300-class vocabulary every template adds 300 text
encoder runs to the first call.  It mixes SigLIP's own evaluation phrasing ("This is a photo of
{}.") with plain photo captions and two scene/part phrasings that suit stuff classes and
objects seen small or partly ("sky", "grass", a bottle on a table).
"""

from __future__ import annotations

from typing import Sequence

from faseg_rt.errors import InvalidInputError

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "This is a photo of {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo containing {}.",
    "a cropped photo of a {}.",
    "a photo of a scene with {}.",
)

#: CLIP's "none of these" option (faseg_rt.frontend.recognizer): texts that describe a photo
#: without naming anything in it, ensembled like a class.  An image where no class matches
#: better than these puts its softmax mass on "none".
NULL_PROMPTS: tuple[str, ...] = (
    "a photo.",
    "an empty photo.",
    "a blank image.",
    "a photo of nothing in particular.",
    "a blurry photo of a background.",
)


def check_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
    """Validate a template list: non-empty strings each holding exactly one '{}'."""
    if templates is None:
        return DEFAULT_TEMPLATES
    if isinstance(templates, str):
        templates = (templates,)
    out = tuple(templates)
    if not out:
        raise InvalidInputError("templates is empty: give at least one, e.g. 'a photo of a {}.'")
    for t in out:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise InvalidInputError(f"template {t!r} must be a string with exactly one '{{}}' "
                                    "where the class name goes")
    return out


def fill(templates: Sequence[str], classes: Sequence[str]) -> list[str]:
    """The K * T prompts, class-major: prompt k * T + t = templates[t] filled with classes[k]."""
    return [t.format(c) for c in classes for t in templates]
