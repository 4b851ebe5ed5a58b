"""The published per-image inputs: candidate class strings and captions (JSON: image id -> string).

The file reader and the candidate-string parser live in faseg_rt.frontend.input_files (segment
and label read the same files); here they resolve a dataset's ids.  Names that match no class
are returned separately: a prediction index must always map back to a dataset class, so they
can never be segmented.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping

from faseg_rt.frontend.input_files import build_vocabulary, split_candidate_string, read_id_string_json

__all__ = ["build_vocabulary", "split_candidate_string", "read_id_string_json", "resolve_candidates",
           "resolve_captions"]


def resolve_candidates(raw: Mapping[str, str] | None, ids: Iterable[str],
                       class_names: tuple[str, ...], aliases: Mapping[str, str] | None = None,
                       background: bool = True
                       ) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    """Per-image candidate class names (background never included) for the given ids.

    class_names: the dataset's classes, background first when `background` (VOC, Context-59,
    COCO-Object); benchmarks without a background class pass background=False.
    Without `raw`, every image gets all dataset classes except background. With it, an id missing
    from `raw` gets no candidates (an all-background mask, as in the published run). Returns the
    per-id names and a count of each unknown word; one warning lists the unknown words.
    """
    ids = list(ids)
    names = tuple(class_names[1:] if background else class_names)
    if raw is None:
        return {i: names for i in ids}, {}
    vocab = build_vocabulary(names, aliases)
    out: dict[str, tuple[str, ...]] = {}
    unknown: dict[str, int] = {}
    for i in ids:
        known, bad = split_candidate_string(raw.get(i, ""), vocab)
        out[i] = known
        for w in bad:
            unknown[w] = unknown.get(w, 0) + 1
    if unknown:
        listed = ", ".join(f"{w!r} ({n})" for w, n in sorted(unknown.items()))
        warnings.warn(f"candidate names that are not dataset classes were left out: {listed}",
                      stacklevel=2)
    return out, unknown


def resolve_captions(raw: Mapping[str, str] | None, ids: Iterable[str]) -> dict[str, str | None]:
    """Per-image caption, None where there is none (no file, missing id, empty string)."""
    raw = raw or {}
    return {i: (raw.get(i) or "").strip() or None for i in ids}
