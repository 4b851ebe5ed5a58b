"""The vocabulary classes a caption names, in the order it names them.

FA-Seg segments only the classes it is told are present, and most of the published candidates
are classes the image's caption names.  A caption says "two men riding bikes past a couch", not
"person bicycle sofa", so matching needs three things:

- the names as datasets write them, tokenised the same way as the caption: lower case, words of
  letters and digits ("tv-monitor" is "tv monitor"); compact spellings ("tvmonitor",
  "pottedplant") are also matched by the lexicon's spaced key; COCO-Stuff's "-other" / "-stuff"
  suffixes are dropped ("wall-other" is "wall") and its "wall-brick" also reads "brick wall";
  "a/b" names each part;
- singular and plural of each phrase's last word (`faseg_rt.frontend.inflect`);
- a lexicon of synonyms and hyponyms per class name (people / man / player -> person, couch ->
  sofa, puppy -> dog), kept as data in `lexicons/*.json`, one file per vocabulary family, keyed
  by class name, so it serves every vocabulary holding those names.  A user lexicon extends it.

Matching is leftmost-longest over the caption's words: at each word the longest phrase that names
something wins and its words are consumed, so "fire hydrant" names the hydrant, not a "fire"
class, "dining table" names the dining table before "table" can, and "computer monitor" names
the monitor class only.  A phrase can name several classes ("cyclist": person and bicycle); when
phrases clash, the strongest kind of evidence wins, in this order: a class's own name, a word the
lexicon (user or built-in) lists under the class's name, a word listed under a shorter form of
the name ("floor" for "floor-other"), then the same three inflected.  So in a vocabulary holding
both "desk" and "table", "desk" names the desk only, though the lexicon lists "desk" under
"table" for vocabularies without a desk class; and COCO-Stuff's "wooden floor" names
"floor-wood", not also "floor-other".  BLIP-large's artefact tokens ("araffe", "arafed",
"arafly", "araflane": a caption's first word garbled) name nothing and are skipped, even when a
lexicon lists them.  A phrase right after "no" or "without" names nothing ("an empty street with
no cars"), though it is still consumed; so does "couple of" ("a couple of dogs": no person).
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

from faseg_rt.errors import InvalidInputError
from faseg_rt.frontend.inflect import number_forms

_WORD = re.compile(r"[a-z0-9]+")
#: BLIP-large's artefact words: "araffe", "arafed", "arafly", "arrafed", "araflane", ...
_ARTEFACT = re.compile(r"^ar+af")
#: A phrase right after one of these is absent: "a street with no cars", "a room without people".
_NEGATIONS = frozenset({"no", "without"})
#: Phrases that read like a class word but only count things: "a couple of dogs" has no person.
_QUANTIFIERS = (("couple", "of"), ("couples", "of"))
#: Suffixes COCO-Stuff adds to tell stuff from things of the same name.
_STUFF_SUFFIXES = ("other", "stuff")
#: Evidence ranks, strongest first (see the module docstring); an inflected form ranks
#: _INFLECTED below its phrase, after every uninflected one.
_OWN, _LEXICON, _DERIVED, _INFLECTED = range(4)


def _words(text: str) -> list[str]:
    """Lower-case word tokens with BLIP's artefact words left out."""
    return [w for w in _WORD.findall(text.lower()) if not _ARTEFACT.match(w)]


def _key(name: str) -> str:
    """A class name's spelling-free key: "tv monitor", "tvmonitor" and "TV-Monitor" agree."""
    return "".join(_WORD.findall(name.lower()))


def name_phrases(name: str) -> list[str]:
    """The phrases (space-joined words) that write a class name as a caption would."""
    out = [" ".join(_words(name))]
    for part in re.split(r"\s*/\s*", name):
        pieces = [" ".join(_words(p)) for p in re.split(r"[-_]", part)]
        pieces = [p for p in pieces if p]
        if len(pieces) >= 2 and pieces[-1] in _STUFF_SUFFIXES:
            pieces = pieces[:-1]
        elif len(pieces) == 2:
            out.append(f"{pieces[1]} {pieces[0]}")
        out.append(" ".join(pieces))
    out.append(_key(name))  # "tv monitor" also as "tvmonitor", "tvmonitor" as itself
    return [p for p in dict.fromkeys(out) if p]


@functools.lru_cache(maxsize=1)
def builtin_lexicon() -> dict[str, tuple[str, ...]]:
    """The shipped lexicons merged: class-name key -> words (spaced class name first)."""
    merged: dict[str, list[str]] = {}
    folder = resources.files("faseg_rt.frontend") / "lexicons"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        for name, words in data.items():
            if name.startswith("_"):
                continue
            merged.setdefault(_key(name), [name]).extend(words)
    return {k: tuple(dict.fromkeys(v)) for k, v in merged.items()}


def _check_user_lexicon(lexicon: Mapping[str, Sequence[str]],
                        classes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """User lexicon keyed by vocabulary class name; an unknown class is one clear error."""
    by_key = {_key(c): c for c in classes}
    out: dict[str, tuple[str, ...]] = {}
    for name, words in lexicon.items():
        cls = by_key.get(_key(str(name)))
        if cls is None:
            shown = ", ".join(list(classes)[:8]) + (", ..." if len(classes) > 8 else "")
            raise InvalidInputError(f"lexicon names class {name!r}, which is not in the vocabulary "
                                    f"({shown}); key each entry by one of the vocabulary's names")
        if isinstance(words, str):
            words = [words]
        if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
            raise InvalidInputError(f"lexicon entry {name!r} must be a list of words (strings)")
        out[cls] = out.get(cls, ()) + tuple(words)
    return out


@functools.lru_cache(maxsize=16)
def _phrase_table(classes: tuple[str, ...], user: tuple[tuple[str, tuple[str, ...]], ...]
                  ) -> tuple[dict[tuple[str, ...], tuple[str, ...]], int]:
    """(word tuple -> the classes it names, strongest evidence kept; longest phrase in words)."""
    builtin = builtin_lexicon()
    best: dict[tuple[str, ...], tuple[int, list[str]]] = {}

    def add(phrase: str, cls: str, rank: int) -> None:
        words = tuple(_words(phrase))
        if not words:
            return
        old_rank, names = best.get(words, (rank, []))
        if rank < old_rank:
            best[words] = (rank, [cls])
        elif rank == old_rank and cls not in names:
            best[words] = (rank, names + [cls])

    user_words = dict(user)
    for cls in classes:
        own = name_phrases(cls)
        lex = list(builtin.get(_key(cls), ())) + list(user_words.get(cls, ()))
        derived = [w for p in own[1:] for w in builtin.get(_key(p), ())]
        for rank, phrases in ((_OWN, own), (_LEXICON, lex), (_DERIVED, derived)):
            for p in phrases:
                add(p, cls, rank)
                for f in number_forms(p):
                    add(f, cls, rank + _INFLECTED)
    table = {w: tuple(names) for w, (_, names) in best.items()}
    table.update(dict.fromkeys(_QUANTIFIERS, ()))
    return table, max(map(len, table), default=1)


def classes_in_caption(caption: str, classes: Sequence[str],
                       lexicon: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The classes of `classes` that `caption` names, in order of first mention, no repeats.

    caption: free text (a BLIP caption, a user's sentence); classes: the vocabulary, as the
    dataset or user writes it ("tv monitor", "tvmonitor", "wall-other"); lexicon: extra words
    per class, {class name: [words]}, added to the built-in lexicon (a key that is not a class
    of `classes` is an InvalidInputError).  Matching is described in the module docstring.

    >>> classes_in_caption("two men ride bikes past a couch", ["sofa", "person", "bicycle"])
    ['person', 'bicycle', 'sofa']
    """
    classes = tuple(str(c) for c in classes)
    user = _check_user_lexicon(lexicon, classes) if lexicon else {}
    table, longest = _phrase_table(classes, tuple(sorted(user.items())))
    words = _words(caption or "")
    found: list[str] = []
    for start, _, names in longest_matches(words, table, longest):
        if names is not None and (start == 0 or words[start - 1] not in _NEGATIONS):
            found += [c for c in names if c not in found]
    return found


def longest_matches(words: Sequence[str], table: Mapping[tuple[str, ...], object],
                    longest: int | None = None):
    """Leftmost-longest matching of `words` against phrase `table` (word tuple -> value).

    Yields (start, length, value) for each matched phrase, in order, and (start, 1, None) for a
    word that starts no phrase; a matched phrase's words are consumed.  `longest`: the most
    words in a phrase (None: computed from the table).
    """
    if longest is None:
        longest = max(map(len, table), default=1)
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            value = table.get(tuple(words[i:i + n]))
            if value is not None:
                yield i, n, value
                i += n
                break
        else:
            yield i, 1, None
            i += 1


def load_lexicon(path: str | Path) -> dict[str, list[str]]:
    """Read a user lexicon file: a JSON (or, with PyYAML installed, YAML) mapping class name ->
    list of words (a single word may be given as a string).  An empty, unreadable or
    non-mapping file is one InvalidInputError line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"lexicon file {path} cannot be read: {e}") from None
    if not text.strip():
        raise InvalidInputError(f"lexicon file {path} is empty; write a JSON object "
                                '{"class name": ["word", ...]}')
    data = _parse_lexicon_text(text, path)
    if not isinstance(data, dict) or not data:
        raise InvalidInputError(f"lexicon file {path} must hold a non-empty mapping "
                                '{"class name": ["word", ...]}')
    out: dict[str, list[str]] = {}
    for name, words in data.items():
        words = [words] if isinstance(words, str) else words
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise InvalidInputError(f"lexicon file {path}: entry {name!r} must be a list of words")
        out[str(name)] = list(words)
    return out


def _parse_lexicon_text(text: str, path: Path):
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InvalidInputError(f"lexicon file {path} is YAML but PyYAML is not installed; "
                                    "pip install pyyaml, or write the lexicon as JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InvalidInputError(f"lexicon file {path} is not valid YAML: "
                                    f"{' '.join(str(e).split())}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"lexicon file {path} is not valid JSON: {e}") from None
