"""Input files of per-image captions and candidate class lists, keyed by image (JSON).

One shape for `eval`, `segment` and `label`: a JSON object image -> string, keyed by the image's
file name, a path ending in it, or its stem ("2007_000033.jpg", "x/2007_000033", "2007_000033"
all name one image).  A candidate string is class names separated by spaces, where a name may
itself hold spaces ("potted plant", "traffic light"); `split_candidate_string` splits it by greedy
longest match against the vocabulary's names and aliases, so "dining table" is one class and
"table" alone is another (in Context).  `segment` and `label` also take a JSON list of names
per image.

`read_captions` / `read_candidates` (and `captions_for` / `candidates_for` on a mapping already
read) are what `segment` and `label` use: every image must be named, every candidate
must be a class of the vocabulary (spelt as --classes does, or as `spelling_aliases` lists:
"tvmonitor", "tv-monitor"; a near miss gets a "did you mean"), and a candidates file may name
no image outside the run (a typo there would otherwise pass silently).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError
from faseg_rt.frontend.caption_classes import longest_matches

_STRIP = ",;"
#: Suffixes a key may carry (dropped, case-insensitive): the stem names the image.
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


def spelling_aliases(class_names: Iterable[str]) -> dict[str, str]:
    """Other spellings of each class name, as devkits and lists write them: the name run
    together ("tvmonitor", "diningtable", "pottedplant") or its words joined by a space, a hyphen
    or an underscore ("tv-monitor", "wall other").  Eval's dataset vocabularies and segment /
    label's candidates files read names with these."""
    out: dict[str, str] = {}
    for name in class_names:
        words = re.findall(r"[a-z0-9]+", name.lower())
        for alias in ("".join(words), " ".join(words), "-".join(words), "_".join(words)):
            if alias and alias != name.lower():
                out.setdefault(alias, name)
    return out


def split_candidate_string(text: str, vocabulary: Mapping[tuple[str, ...], str]
                     ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a candidate string into (known class names, unknown words).

    Greedy longest match: at each position the longest run of words that names a class (or an
    alias of one) wins; a word that starts no known name is unknown. Matching ignores case and
    stray commas/semicolons; known names come back in their canonical spelling, in order of first
    appearance, without repeats. Pure: no I/O, no warnings.

    >>> v = build_vocabulary(["dining table", "table", "cat"])
    >>> split_candidate_string("cat dining table table zebra", v)
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


def image_key(key: str) -> str:
    """The stem a file key names: directories and an image suffix dropped."""
    base = os.path.basename(str(key).strip())
    for ext in _EXTENSIONS:
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base


class FileMapping(dict):
    """A dict read from a file, which error messages name (`source`)."""

    source: str = "the given mapping"


def read_id_string_json(path: str | os.PathLike, what: str, lists: bool = False) -> FileMapping:
    """Load a JSON object image id -> string (or, with `lists`, -> list of strings too); ids may
    carry a path or an image suffix.  A null value reads as ""."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"{what} file {path} not found") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{what} file {path} is a directory; give a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{what} file {path} is not valid JSON: {e}") from None
    except OSError as e:
        raise InvalidInputError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    shape = "image -> string" + (" or list of strings" if lists else "")
    if not isinstance(data, dict):
        raise InvalidInputError(f"{what} file {path} must hold a JSON object: {shape}")
    out = FileMapping()
    out.source = str(path)
    for k, v in data.items():
        if v is None:
            v = ""
        ok = isinstance(v, str) or (lists and isinstance(v, list) and all(isinstance(x, str) for x in v))
        if not ok:
            raise InvalidInputError(f"{what} file {path}: the value for {k!r} is not a string "
                                    f"(the file must map {shape})")
        out[image_key(k)] = v
    return out


def _check_names(raw: Mapping, images: Sequence[str], source, what: str, strict: bool) -> list[str]:
    """The file's key of each image; refuses an image it does not name (and, `strict`, a key
    naming no image of the run)."""
    keys = [image_key(p) for p in images]
    missing = [p for p, k in zip(images, keys) if k not in raw]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InvalidInputError(f"{what} file {source} does not name image {missing[0]}{more}; add "
                                "it (keyed by file name or stem) or leave the image out")
    if strict:
        extra = sorted(set(raw) - set(keys))
        if extra:
            raise InvalidInputError(f"{what} file {source} names {extra[0]!r}, which is not among "
                                    "the images being segmented; fix the key or drop it")
    return keys


def captions_for(raw: Mapping[str, str], images: Sequence[str], source) -> list[str | None]:
    """One caption per image from a read captions file ("" or null: no caption)."""
    return [raw[k].strip() or None for k in _check_names(raw, images, source, "captions", False)]


def candidates_for(raw: Mapping, images: Sequence[str], classes: Sequence[str],
                   source) -> list[tuple[str, ...]]:
    """One candidate list per image from a read candidates file, in the file's order; a name
    that is not one of `classes` is refused (it could never be segmented)."""
    vocab = build_vocabulary(classes, spelling_aliases(classes))
    out = []
    for image, key in zip(images, _check_names(raw, images, source, "candidates", True)):
        value = raw[key]
        if isinstance(value, list):
            known = tuple(vocab.get(tuple(" ".join(re.findall(r"[a-z0-9]+", n.lower())).split()), "")
                          for n in value)
            unknown = tuple(n for n, k in zip(value, known) if not k)
        else:
            known, unknown = split_candidate_string(value, vocab)
        if unknown:
            raise InvalidInputError(f"candidates file {source}: {unknown[0]!r} (for {image}) is "
                                    "not a class of the vocabulary; candidates must be names from "
                                    f"--classes{rules.did_you_mean(unknown[0], classes)}")
        out.append(tuple(dict.fromkeys(known)))
    return out


def read_captions(path, images: Sequence[str]) -> list[str | None]:
    """captions_for a captions file."""
    return captions_for(read_id_string_json(path, "captions"), images, path)


def read_candidates(path, images: Sequence[str], classes: Sequence[str]) -> list[tuple[str, ...]]:
    """candidates_for a candidates file (values: candidate strings or lists of names)."""
    return candidates_for(read_id_string_json(path, "candidates", lists=True), images, classes, path)
