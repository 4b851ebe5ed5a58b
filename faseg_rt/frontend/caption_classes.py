"""The vocabulary classes a caption names, in the order it names them: the lexicon rules, all here.

FA-Seg segments only the classes it is told are present, and most of the published candidates
are classes the image's caption names.  A caption says "two men riding bikes past a couch", not
"person bicycle sofa".  The rules, in the order they apply:

1. Tokens.  Caption and class names are NFKC-normalised, case-folded tokens in any script; a
   character of a script without spaces (Chinese, Japanese) is a token, so such names match as
   substrings (`faseg_rt.frontend.caption_text`).  Names match as datasets write them
   ("tv-monitor", compact "tvmonitor", COCO-Stuff's "wall-other" as "wall", "wall-brick" also
   as "brick wall", "a/b" as each part), with singular and plural of an English phrase's last
   word (`faseg_rt.frontend.inflect`).
2. Words.  A lexicon of synonyms and hyponyms per class name (people / man -> person, couch ->
   sofa), one file per vocabulary family in `lexicons/*.json`, scoped to the family's classes
   (the scope rule: `faseg_rt.frontend.lexicon`), plus the user's words.  BLIP-large's artefact
   words ("araffe", "arafed") are in no built-in list, but a user may list them.
3. Compounds.  Phrases that would otherwise be read as a class they do not name ("hot dog",
   "bus stop", "rubber band"; common.json and each family's `_phrases`, a user's `_phrases`)
   consume their words and name what their targets name in the vocabulary ("fire engine" ->
   truck where there is one, else nothing; [] names nothing).
4. Matching is leftmost-longest: at each token the longest phrase wins and its tokens are
   consumed, so "fire hydrant" names the hydrant, not a "fire" class.  When one phrase is
   listed several ways, the strongest evidence wins, in this order: a class's own name, a
   user's word or phrase, a built-in lexicon word, a compound phrase, a word listed under a
   shorter form of the name ("floor" for "floor-other"), then the same five inflected.  So in
   a vocabulary holding "desk" and "table", "desk" names the desk alone.  A phrase may name
   several classes ("cyclist": person and bicycle).
5. Modifiers.  A modifier word (colours, "baby"; common.json) right before a noun phrase of any
   family names nothing: "an orange cat" is a cat, "a baby elephant" an elephant (no person),
   unless it is the user's word.
6. Negation.  After "no", "without", "not" or "free of", articles, quantifiers and up to two
   other words ("with no parked cars") may stand before the negated phrase, which names nothing;
   "or" / "nor" carry the negation to the next phrase.  It ends at the negated phrase, at a
   clause mark (, ; : . ! ? parentheses) or at a word that starts another part of the sentence
   ("and", prepositions, "is", ...): "a dog without a leash next to a cat" names dog and cat.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

from faseg_rt.frontend import lexicon as lex
from faseg_rt.frontend.caption_text import CLAUSE_MARKS, name_phrases, tokens, words
from faseg_rt.frontend.inflect import number_forms
from faseg_rt.frontend.lexicon import load_lexicon

__all__ = ["classes_in_caption", "longest_matches", "load_lexicon", "name_phrases"]

#: Evidence ranks, strongest first (module docstring, rule 4); inflected forms rank _INFLECTED
#: below their phrase, after every uninflected one.
_OWN, _USER, _LEXICON, _COMPOUND, _DERIVED, _INFLECTED = range(6)
#: Words and phrases that negate what follows (rule 6).
_NEGATIONS = (("no",), ("without",), ("not",), ("free", "of"))
_NEGATE = (99, "negate")
#: Words that may stand between a negation and the phrase it negates.
_DETERMINERS = frozenset("a an the any some one single other more many much enough of".split())
#: Words that end a negation's reach: another part of the sentence begins.
_STOPS = frozenset("and but with next to on in at by near under over above below behind beside "
                   "besides from into onto while which that who is are was were has have".split())
#: How many unknown words may stand between a negation and its phrase.
_MAX_GAP = 2


def _add(best: dict, phrase: str, names: tuple[str, ...], rank: int) -> None:
    toks = tuple(words(phrase))
    if not toks:
        return
    old_rank, old = best.get(toks, (rank, ()))
    if rank < old_rank:
        best[toks] = (rank, names)
    elif rank == old_rank:
        best[toks] = (rank, old + tuple(n for n in names if n not in old))


def _add_forms(best: dict, phrase: str, names: tuple[str, ...], rank: int) -> None:
    _add(best, phrase, names, rank)
    if phrase.isascii():
        for f in number_forms(phrase):
            _add(best, f, names, rank + _INFLECTED)


def _resolve(targets: tuple[str, ...], base: dict) -> tuple[str, ...]:
    """The classes a compound's targets name in a table of class phrases."""
    out: tuple[str, ...] = ()
    for t in targets:
        out += tuple(n for n in base.get(tuple(words(t)), (0, ()))[1] if n not in out)
    return out


@functools.lru_cache(maxsize=16)
def _phrase_table(classes: tuple[str, ...], user_words: tuple, user_phrases: tuple
                  ) -> tuple[dict[tuple[str, ...], tuple[int, object]], int]:
    """(token tuple -> (rank, classes it names), strongest kept; longest phrase in tokens)."""
    builtin = lex.scoped_words(classes)
    mine = dict(user_words)
    best: dict[tuple[str, ...], tuple[int, tuple[str, ...]]] = {}
    for cls in classes:
        own = name_phrases(cls)
        derived = [w for p in own[1:] for w in lex.derived_words(p)]
        for rank, phrases in ((_OWN, own), (_USER, mine.get(cls, ())),
                              (_LEXICON, builtin[cls]), (_DERIVED, derived)):
            for p in phrases:
                _add_forms(best, p, (cls,), rank)
    base = dict(best)
    for rank, phrases in ((_COMPOUND, lex.scoped_phrases(classes)), (_USER, dict(user_phrases))):
        for phrase, targets in phrases.items():
            _add_forms(best, phrase, _resolve(targets, base), rank)
    table: dict = dict(best)
    for neg in _NEGATIONS:
        table.setdefault(neg, _NEGATE)
    return table, max(map(len, table), default=1)


@functools.lru_cache(maxsize=1)
def _nouns() -> tuple[frozenset, int]:
    """Every phrase any family knows as a thing (class names, words, compounds): what a
    modifier may describe and what a negation may negate, in any vocabulary."""
    out = set()
    for fam in lex.families():
        out.update(fam.words)
        out.update(w for ws in fam.words.values() for w in ws)
        out.update(fam.phrases)
    out.update(lex.common_rules()[0])
    more = {f for p in out if p.isascii() for f in number_forms(p)}
    nouns = frozenset(tuple(p.split(" ")) for p in out | more)
    return nouns, max(map(len, nouns))


def _starts_noun(toks: Sequence[str], i: int) -> bool:
    nouns, longest = _nouns()
    return any(tuple(toks[i:i + n]) in nouns for n in range(1, min(longest, len(toks) - i) + 1))


def _is_modifier(toks: Sequence[str], i: int, mine: frozenset) -> bool:
    """Rule 5: toks[i] describes the noun after it (more modifiers may stand between) and is
    not one of the user's words (`mine`)."""
    modifiers = lex.common_rules()[1]
    if toks[i] in mine or toks[i] not in modifiers:
        return False
    j = i + 1
    while j < len(toks) and toks[j] in modifiers:
        j += 1
    return j < len(toks) and _starts_noun(toks, j)


def classes_in_caption(caption: str, classes: Sequence[str],
                       lexicon: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """The classes of `classes` that `caption` names, in order of first mention, no repeats.

    caption: free text (a BLIP caption, a user's sentence); classes: the vocabulary, as the
    dataset or user writes it ("tv monitor", "tvmonitor", "wall-other", "猫"); lexicon: extra
    words per class, {class name: [words]}, and optionally "_phrases": {phrase: [targets]},
    ranked above the built-in rules; keys that are not classes of `classes` are ignored.
    The rules are in the module docstring.

    >>> classes_in_caption("two men ride bikes past a couch", ["sofa", "person", "bicycle"])
    ['person', 'bicycle', 'sofa']
    """
    classes = tuple(str(c) for c in classes)
    mine, phrases = lex.split_user_lexicon(lexicon, classes) if lexicon else ({}, {})
    table, longest = _phrase_table(classes, tuple(sorted(mine.items())),
                                   tuple(sorted(phrases.items())))
    toks = tokens(caption or "")
    own_words = frozenset(w for ws in mine.values() for w in ws)
    found: list[str] = []
    state, gap = None, 0  # state: None, "seek" (after a negation), "after" (its phrase seen)
    for start, n, entry in longest_matches(toks, table, longest):
        tok = toks[start]
        if entry is _NEGATE:
            state, gap = "seek", 0
            continue
        if state == "after":
            state = "seek" if tok in ("or", "nor") else None
            if state:
                continue
        if state == "seek":
            state, gap = _negated(toks, start, n, entry, gap, own_words)
            if state is not None:
                continue
        if entry is not None and not (n == 1 and _is_modifier(toks, start, own_words)):
            found += [c for c in entry[1] if c not in found]
    return found


def _negated(toks: Sequence[str], i: int, n: int, entry, gap: int,
             mine: frozenset) -> tuple[str | None, int]:
    """The negation state after token i (state "seek"): "after" once its phrase is consumed,
    "seek" while articles and unknown words stand between, None once it has ended."""
    tok = toks[i]
    if entry is not None or _starts_noun(toks, i):
        modifier = entry is not None and n == 1 and _is_modifier(toks, i, mine)
        return ("seek", gap) if modifier else ("after", 0)
    if tok in CLAUSE_MARKS or tok in _STOPS:
        return None, 0
    if tok in _DETERMINERS or tok.isdigit():
        return "seek", gap
    return ("seek", gap + 1) if gap < _MAX_GAP else (None, 0)


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
