"""Captions and class names as word tokens, in any script.

Text is NFKC-normalised and case-folded ("ＴＶ" is "tv", "Straße" is "strasse"), then cut into
tokens: a run of letters and digits of an alphabetic script (Latin with accents, Cyrillic, Greek,
...), one character of a script written without spaces (Han, kana, Hangul, Thai), so a Chinese
or Japanese class name is matched as a substring of the caption ("猫" in "一只猫在睡觉"), one
symbol or emoji character ("🐈"), and the clause marks , ; : . ! ? ( ) that end a negation's
reach (they never match a class).  Everything else (spaces, hyphens, quotes) separates tokens.
"""

from __future__ import annotations

import re
import unicodedata

#: Scripts written without spaces between words: every character is a token of its own.
_NO_SPACE = ("\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf"
             "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\u0e00-\u0e7f\U00020000-\U0002fa1f")
_TOKEN = re.compile(rf"[{_NO_SPACE}]|(?:(?![{_NO_SPACE}])[^\W_])+|[,;:.!?()]|[^\w\s]")
#: Clause marks: tokens that separate phrases and end a negation's reach.
CLAUSE_MARKS = frozenset(",;:.!?()")
#: BLIP-large's artefact words: "araffe", "arafed", "arafly", "arrafed", "araflane", ...
_ARTEFACT = re.compile(r"^ar+af")
#: Suffixes COCO-Stuff adds to tell stuff from things of the same name.
_STUFF_SUFFIXES = ("other", "stuff")


def fold(text: str) -> str:
    """NFKC-normalised, case-folded text."""
    return unicodedata.normalize("NFKC", text).casefold()


def tokens(text: str) -> list[str]:
    """The caption's tokens: words, no-space-script characters, symbols and clause marks."""
    return [t for t in _TOKEN.findall(fold(text)) if not _is_punctuation(t) or t in CLAUSE_MARKS]


def words(text: str) -> list[str]:
    """The tokens of a class name or lexicon phrase: as `tokens`, without clause marks."""
    return [t for t in tokens(text) if t not in CLAUSE_MARKS]


def _is_punctuation(token: str) -> bool:
    return len(token) == 1 and unicodedata.category(token).startswith("P")


def is_artefact(word: str) -> bool:
    """BLIP-large's garbled first words ("araffe"): never a built-in lexicon word."""
    return bool(_ARTEFACT.match(word))


def key(name: str) -> str:
    """A class name's spelling-free key: "tv monitor", "tvmonitor" and "TV-Monitor" agree."""
    return "".join(words(name))


def name_phrases(name: str) -> list[str]:
    """The phrases (space-joined tokens) that write a class name as a caption would."""
    out = [" ".join(words(name))]
    for part in re.split(r"\s*/\s*", name):
        pieces = [" ".join(words(p)) for p in re.split(r"[-_]", part)]
        pieces = [p for p in pieces if p]
        if len(pieces) >= 2 and pieces[-1] in _STUFF_SUFFIXES:
            pieces = pieces[:-1]
        elif len(pieces) == 2:
            out.append(f"{pieces[1]} {pieces[0]}")
        out.append(" ".join(pieces))
    compact = key(name)  # "tv monitor" also as "tvmonitor", "tvmonitor" as itself
    if compact and words(compact) == [compact]:
        out.append(compact)
    return [p for p in dict.fromkeys(out) if p]
