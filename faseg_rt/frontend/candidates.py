"""Which classes an image is segmented into: the candidate modes and the order of the classes.

    candidates=None          the whole vocabulary
    candidates="auto"        the classes the caption names, united with the recogniser's (the
                             published recipe: caption-named classes plus a tagger)
    candidates="caption"     the classes the caption names only (faseg_rt.frontend.caption_classes)
    candidates="recognizer"  the recogniser's kept classes only
    candidates=[names]       the given classes (checked against the vocabulary)

Order matters: the classes are written into the UNet's class prompt in this order, and CLIP's
causal text encoder gives a name a different embedding after different names.  The published
lists are in the order their sources gave them, so the order kept here is: the caller's order
for a given list, the caption's order for the classes it names, then the recogniser-only classes
by decreasing score (ties: vocabulary order).  Labels still index the vocabulary whatever the
order (ImagePlan.finish).

Sources: each kept class records where it came from ("caption", "recognizer", both, or "given"),
so a user can see which route found what (the result's `sources`, `<stem>.json`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError

AUTO, CAPTION, RECOGNIZER, GIVEN = "auto", "caption", "recognizer", "given"
MODES = rules.CANDIDATE_MODES  # (AUTO, CAPTION, RECOGNIZER); "recogniser" is taken too


def check_candidates(value):
    """None, a mode (canonical: "recogniser" -> "recognizer"), or a list of names (a lone string
    that is no mode is refused)."""
    if value is None or rules.candidate_mode(value):
        return rules.candidate_mode(value)
    if isinstance(value, str):
        raise InvalidInputError(f"candidates must be None, {rules.modes_text()} or a list of class "
                                f"names, got {value!r}{rules.did_you_mean(value, MODES)}")
    return value


def uses_caption(mode) -> bool:
    return isinstance(mode, str) and mode in (AUTO, CAPTION)


def uses_recognizer(mode) -> bool:
    return isinstance(mode, str) and mode in (AUTO, RECOGNIZER)


def given_candidates(names, vocabulary: tuple[str, ...]) -> tuple[str, ...]:
    """An explicit candidate list checked against the vocabulary, in the caller's order (a
    repeated name counts once; names match ignoring case and repeated spaces)."""
    if isinstance(names, str):
        raise InvalidInputError(f"candidates must be None, a mode or a list of class names, got {names!r}")
    canon = {c.lower(): c for c in vocabulary}
    out: dict[str, None] = {}
    for n in names:
        key = " ".join(str(n).split()).lower()
        if key not in canon:
            raise InvalidInputError(f"candidate {n!r} is not in the vocabulary; candidates must be "
                                    "names from classes")
        out[canon[key]] = None
    return tuple(out)


def by_score(kept: Sequence[str], classes: Sequence[str], scores: np.ndarray) -> tuple[str, ...]:
    """`kept` ordered by decreasing score (scores: (K,) over `classes`); ties keep vocabulary order."""
    pos = {c: i for i, c in enumerate(classes)}
    return tuple(sorted(kept, key=lambda c: (-float(scores[pos[c]]), pos[c])))


def combine(mode, caption_named: Sequence[str], recognised: Sequence[str]
            ) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """(classes to segment, sources) of one image for a mode; recognised is already by score."""
    named = tuple(caption_named) if uses_caption(mode) else ()
    found = tuple(recognised) if uses_recognizer(mode) else ()
    order = tuple(dict.fromkeys(named + found))
    sources = {c: tuple(s for s, group in ((CAPTION, named), (RECOGNIZER, found)) if c in group)
               for c in order}
    return order, sources


def check_lexicon(lexicon) -> dict | None:
    """A user lexicon {class: [words]}: refused here unless a non-empty mapping, so a wrong
    type fails when the segmenter is made; classes_in_caption checks its classes and words
    against each vocabulary."""
    if lexicon is None:
        return None
    if not isinstance(lexicon, Mapping) or not lexicon:
        raise InvalidInputError("lexicon must be a non-empty dict {class name: [words naming it]}, "
                                f"got {lexicon!r:.60}")
    return dict(lexicon)


def select(scores: np.ndarray, threshold: float, max_candidates: int) -> np.ndarray:
    """Kept indices (ascending) of one image's (K,) scores: >= threshold, the best max_candidates.

    Ties at the cut are broken by vocabulary order (the earlier class wins), so the answer is a
    function of the scores alone.
    """
    passing = np.flatnonzero(scores >= threshold)
    if len(passing) > max_candidates:
        order = np.argsort(-scores[passing], kind="stable")
        passing = np.sort(passing[order[:max_candidates]])
    return passing
