"""The words that name classes: the built-in lexicon families, their scope, and user lexicons.

A family is one file of `lexicons/` (voc, context, coco, ade): the classes of its datasets
(`_classes`), words per class name, and compound phrases (`_phrases`); `common.json` holds the
phrases and modifiers of general English that apply to every vocabulary.

Scope.  A family's words speak for the classes of its own datasets.  For a request vocabulary V,
a class of V takes the words that every family lists under its name (matched by spelling-free
key, so PASCAL Context's `cat` also takes VOC's words for `cat`), except a word that another
class of V claims: a word family F lists under class c is dropped when a family G that holds
both c and another class c' of V lists the word under c' and not under c, and F does not hold
c' (G knew both classes and chose c'; F never saw c').  So in PASCAL Context, which holds both
`tvmonitor` and `computer`, "laptop" names the computer only, while in VOC (no computer class)
VOC's "laptop" still names the tv monitor.  A family's phrases apply where it holds a class of V.

User lexicon: {class name: [words]} plus, optionally, "_phrases": {phrase: [targets]} in the
shape of common.json.  Keys that are not classes of the request's vocabulary are ignored (a
lexicon may serve many vocabularies); a user's words rank above every built-in rule.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from faseg_rt.errors import InvalidInputError
from faseg_rt.frontend.caption_text import is_artefact, key, words

#: The key of a user lexicon (and of a lexicon file) holding compound phrases.
PHRASES = "_phrases"


@dataclass(frozen=True)
class Family:
    """One lexicon file: name, class keys it holds, words per class key, compound phrases."""

    name: str
    classes: frozenset
    words: Mapping[str, tuple[str, ...]]
    phrases: Mapping[str, tuple[str, ...]]
    index: Mapping[str, frozenset]  # word -> the class keys listing it


def _phrase(text: str) -> str:
    return " ".join(words(text))


def _family(name: str, data: dict) -> Family:
    by_key: dict[str, list[str]] = {}
    for cls, listed in data.items():
        if cls.startswith("_"):
            continue
        kept = [_phrase(w) for w in listed if not is_artefact(_phrase(w))]
        by_key.setdefault(key(cls), []).extend(w for w in kept if w)
    index: dict[str, set] = {}
    for k, ws in by_key.items():
        for w in ws:
            index.setdefault(w, set()).add(k)
    classes = {key(c) for c in data.get("_classes", ())} | set(by_key)
    return Family(name, frozenset(classes), {k: tuple(dict.fromkeys(v)) for k, v in by_key.items()},
                  read_phrases(data.get(PHRASES, {}), f"lexicon {name}"),
                  {w: frozenset(ks) for w, ks in index.items()})


@functools.lru_cache(maxsize=1)
def _files() -> dict[str, dict]:
    folder = resources.files("faseg_rt.frontend") / "lexicons"
    return {e.name[:-5]: json.loads(e.read_text(encoding="utf-8"))
            for e in sorted(folder.iterdir(), key=lambda e: e.name) if e.name.endswith(".json")}


@functools.lru_cache(maxsize=1)
def families() -> tuple[Family, ...]:
    """The built-in vocabulary families, by file name (common.json excluded)."""
    return tuple(_family(n, d) for n, d in _files().items() if n != "common")


@functools.lru_cache(maxsize=1)
def common_rules() -> tuple[dict[str, tuple[str, ...]], frozenset]:
    """(phrases of general English, modifier words) from common.json."""
    data = _files()["common"]
    return (read_phrases(data[PHRASES], "lexicon common"),
            frozenset(_phrase(w) for w in data["_modifiers"]))


def read_phrases(raw, where: str) -> dict[str, tuple[str, ...]]:
    """{phrase: [targets]} checked and folded; a target may be one string."""
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"{where}: {PHRASES} must be a mapping {{phrase: [targets]}}, "
                                'e.g. {"hot dog": [], "fire engine": ["truck"]}')
    out = {}
    for phrase, targets in raw.items():
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
            raise InvalidInputError(f"{where}: phrase {phrase!r} must map to a list of targets "
                                    "(words naming classes; [] names nothing)")
        if _phrase(str(phrase)):
            out[_phrase(str(phrase))] = tuple(_phrase(t) for t in targets if _phrase(t))
    return out


def scoped_words(classes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Built-in words per class of `classes` under the scope rule (module docstring)."""
    keys = {c: key(c) for c in classes}
    in_vocab = set(keys.values())
    fams = families()
    out = {}
    for cls, k in keys.items():
        kept: list[str] = []
        for fam in fams:
            for w in fam.words.get(k, ()):
                if not _claimed_elsewhere(w, k, fam, fams, in_vocab):
                    kept.append(w)
        out[cls] = tuple(dict.fromkeys(kept))
    return out


def _claimed_elsewhere(word: str, k: str, source: Family, fams: Iterable[Family],
                       in_vocab: set) -> bool:
    """Whether a family holding class k and another class of the vocabulary gives `word` to
    that other class alone, a class `source` does not hold."""
    for fam in fams:
        if k not in fam.classes:
            continue
        listing = fam.index.get(word, frozenset())
        if k in listing:
            continue
        if any(o != k and o in in_vocab and o not in source.classes for o in listing):
            return True
    return False


def derived_words(part: str) -> tuple[str, ...]:
    """Every family's words for a shorter form of a name ("floor" of "floor-other")."""
    return tuple(w for fam in families() for w in fam.words.get(key(part), ()))


def scoped_phrases(classes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Compound phrases in force for `classes`: common.json's, then those of every family that
    holds one of the classes."""
    keys = {key(c) for c in classes}
    out = dict(common_rules()[0])
    for fam in families():
        if fam.classes & keys:
            out.update(fam.phrases)
    return out


def split_user_lexicon(lexicon: Mapping, classes: Sequence[str]
                       ) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """(words per class of `classes`, user phrases); keys outside the vocabulary are ignored,
    malformed entries are one InvalidInputError line."""
    by_key = {key(c): c for c in classes}
    out: dict[str, tuple[str, ...]] = {}
    phrases: dict[str, tuple[str, ...]] = {}
    for name, listed in lexicon.items():
        if name == PHRASES:
            phrases = read_phrases(listed, "lexicon")
            continue
        listed = [listed] if isinstance(listed, str) else listed
        if not isinstance(listed, (list, tuple)) or not all(isinstance(w, str) for w in listed):
            raise InvalidInputError(f"lexicon entry {name!r} must be a list of words (strings)")
        cls = by_key.get(key(str(name)))
        if cls is not None:
            out[cls] = out.get(cls, ()) + tuple(_phrase(w) for w in listed if _phrase(w))
    return out, phrases


def unmatched_keys(lexicon: Mapping, vocabularies: Iterable[Sequence[str]]) -> list[str]:
    """The user lexicon's class keys that name no class of any of `vocabularies`."""
    seen = {key(c) for vocab in vocabularies for c in vocab}
    return [n for n in lexicon if n != PHRASES and key(str(n)) not in seen]


def load_lexicon(path: str | Path) -> dict:
    """Read a user lexicon file: a JSON (or, with PyYAML installed, YAML) mapping class name ->
    list of words (a single word may be given as a string), optionally with "_phrases":
    {phrase: [targets]}.  An empty, unreadable or malformed file is one InvalidInputError line."""
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
    out: dict = {}
    for name, listed in data.items():
        if name == PHRASES:
            read_phrases(listed, f"lexicon file {path}")
            out[PHRASES] = dict(listed)
            continue
        listed = [listed] if isinstance(listed, str) else listed
        if not isinstance(listed, list) or not all(isinstance(w, str) for w in listed):
            raise InvalidInputError(f"lexicon file {path}: entry {name!r} must be a list of words")
        out[str(name)] = list(listed)
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
