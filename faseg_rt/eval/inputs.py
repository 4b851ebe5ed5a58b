"""The published per-image inputs: candidate class strings and captions (JSON: image id -> string).

A candidate string is class names separated by spaces, where a name may itself hold spaces
("potted plant", "traffic light"). `parse_candidates` splits it by greedy longest match against
the dataset's names and aliases, so "dining table" is one class and "table" alone is another
(in Context). Names that match no class are returned separately: a prediction index must always
map back to a dataset class, so they can never be segmented.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterable, Mapping

from faseg_rt.errors import InvalidInputError
from faseg_rt.frontend.caption_classes import longest_matches

_STRIP = ",;"
_EXTENSIONS = (".jpg", ".jpeg", ".png")


def build_vocabulary(class_names: Iterable[str],
                     aliases: Mapping[str, str] | None = None) -> dict[tuple[str, ...], str]:
    """Word tuple (lower case) -> canonical class name, for names and aliases alike."""
    vocab: dict[tuple[str, ...], str] = {}
    for name in class_names:
        vocab[tuple(name.lower().split())] = name
    canon = {n.lower(): n for n in class_names}
    for alias, target in (aliases or {}).items():
        vocab.setdefault(tuple(alias.lower().split()), canon.get(target.lower(), target))
    return vocab


def parse_candidates(text: str, vocabulary: Mapping[tuple[str, ...], str]
                     ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a candidate string into (known class names, unknown words).

    Greedy longest match: at each position the longest run of words that names a class (or an
    alias of one) wins; a word that starts no known name is unknown. Matching ignores case and
    stray commas/semicolons; known names come back in their canonical spelling, in order of first
    appearance, without repeats. Pure: no I/O, no warnings.

    >>> v = build_vocabulary(["dining table", "table", "cat"])
    >>> parse_candidates("cat dining table table zebra", v)
    (('cat', 'dining table', 'table'), ('zebra',))
    """
    words = [w.strip(_STRIP).lower() for w in text.split()]
    words = [w for w in words if w]
    known: list[str] = []
    unknown: list[str] = []
    for start, _, name in longest_matches(words, vocabulary):
        if name is None:
            if words[start] not in unknown:
                unknown.append(words[start])
        elif name not in known:
            known.append(name)
    return tuple(known), tuple(unknown)


def _normalise_id(key: str) -> str:
    key = str(key).strip()
    base = os.path.basename(key)
    for ext in _EXTENSIONS:
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


def read_id_string_json(path: str | os.PathLike, what: str) -> dict[str, str]:
    """Load a JSON object image id -> string; ids may carry a path or .jpg/.png suffix."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InvalidInputError(f"{what} file {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{what} file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{what} file {path} must hold a JSON object: image id -> string")
    out: dict[str, str] = {}
    for k, v in data.items():
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise InvalidInputError(f"{what} file {path}: value for {k!r} is not a string")
        out[_normalise_id(k)] = v
    return out


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
        known, bad = parse_candidates(raw.get(i, ""), vocab)
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
