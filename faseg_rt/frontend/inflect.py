"""English noun number for matching class names in captions: the singular and plural forms of a
name's last word ("potted plants", "people", "knives", "buses", "shelves" <-> "shelf").

Forms are generated from the class side, never by stemming the caption, so a caption word only
matches when some class phrase really inflects to it.  Rules that cannot tell ("photo" ->
"photos" or "photoes", "shelves" -> "shelf" or "shelfe") return every candidate: the wrong ones
are not English words and so never occur in a caption.
"""

from __future__ import annotations

# singular -> plural(s) where the regular rules are wrong or incomplete.
IRREGULAR_PLURALS: dict[str, tuple[str, ...]] = {
    "person": ("people", "persons"), "man": ("men",), "woman": ("women",),
    "child": ("children",), "mouse": ("mice",), "goose": ("geese",), "foot": ("feet",),
    "tooth": ("teeth",), "ox": ("oxen",), "louse": ("lice",), "die": ("dice",),
    "sheep": ("sheep",), "deer": ("deer",), "fish": ("fish", "fishes"), "moose": ("moose",),
    "bison": ("bison",), "cattle": ("cattle",), "aircraft": ("aircraft",),
    "salmon": ("salmon",), "trout": ("trout",), "shrimp": ("shrimp", "shrimps"),
    "knife": ("knives",), "wife": ("wives",), "life": ("lives",), "leaf": ("leaves",),
    "shelf": ("shelves",), "loaf": ("loaves",), "calf": ("calves",), "half": ("halves",),
    "wolf": ("wolves",), "scarf": ("scarves", "scarfs"), "thief": ("thieves",),
    "elf": ("elves",), "hoof": ("hooves", "hoofs"), "roof": ("roofs",), "chef": ("chefs",),
    "cactus": ("cacti", "cactuses"), "fungus": ("fungi",), "bus": ("buses", "busses"),
    "gas": ("gases",), "lens": ("lenses",), "series": ("series",), "species": ("species",),
    "policeman": ("policemen",), "fireman": ("firemen",), "snowman": ("snowmen",),
    "fisherman": ("fishermen",), "businessman": ("businessmen",),
    "businesswoman": ("businesswomen",), "gentleman": ("gentlemen",),
    "chairman": ("chairmen",), "sportsman": ("sportsmen",), "horseman": ("horsemen",),
    "craftsman": ("craftsmen",), "batsman": ("batsmen",), "cameraman": ("cameramen",),
}

#: Single words whose plural means another thing in captions: a man "wearing glasses" has no
#: drinking glass, "the woods" are trees.  A one-word name does not take these plurals (a
#: lexicon may still list them for a class); inside a phrase they do ("wine glasses").
NO_PLURAL: frozenset[str] = frozenset({"glass", "wood", "good", "spectacle", "custom", "arm"})

_SIBILANT = ("s", "sh", "ch", "x", "z")
_VOWELS = "aeiou"


def _singular_from_irregular() -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for sing, plurals in IRREGULAR_PLURALS.items():
        for p in plurals:
            out.setdefault(p, []).append(sing)
    return {k: tuple(v) for k, v in out.items()}


IRREGULAR_SINGULARS = _singular_from_irregular()


def plurals(word: str) -> tuple[str, ...]:
    """The plural form(s) of a lower-case singular noun ("bus" -> "buses", "knife" -> "knives")."""
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if not word.isalpha() or len(word) < 2:
        return ()
    if word.endswith(_SIBILANT):
        return (word + "es",)
    if word.endswith("y") and word[-2] not in _VOWELS:
        return (word[:-1] + "ies",)
    if word.endswith("o") and word[-2] not in _VOWELS:
        return (word + "s", word + "es")
    if word.endswith("fe"):
        return (word + "s", word[:-2] + "ves")
    if word.endswith("f") and not word.endswith("ff"):
        return (word + "s", word[:-1] + "ves")
    return (word + "s",)


def singulars(word: str) -> tuple[str, ...]:
    """Candidate singulars of a lower-case word that may be a plural (names like "shelves",
    "skis", "leaves"); () when it does not look plural."""
    if word in IRREGULAR_SINGULARS:
        return IRREGULAR_SINGULARS[word]
    if not word.isalpha() or len(word) < 3 or not word.endswith("s") or word.endswith(("ss", "us")):
        return ()
    out = []
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("ves"):
        out += [word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith("es") and word[:-2].endswith(_SIBILANT + ("o",)):
        out.append(word[:-2])
    out.append(word[:-1])
    return tuple(dict.fromkeys(out))


def number_forms(phrase: str) -> tuple[str, ...]:
    """The other-number forms of a space-separated phrase, inflecting its last word
    ("potted plant" -> "potted plants"; "skis" -> "ski"); the phrase itself is not included."""
    *head, last = phrase.split(" ")
    many = () if not head and last in NO_PLURAL else plurals(last)
    forms = [f for f in many + singulars(last) if f != last]
    return tuple(" ".join(head + [f]) for f in dict.fromkeys(forms))
