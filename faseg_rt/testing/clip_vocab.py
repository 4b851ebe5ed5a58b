"""A CLIP-format BPE vocabulary built here, offline, so the test model and the demo need no
download and no extra package for their tokenizer.

CLIP's tokenizer is byte-level BPE with an end-of-word marker `</w>`: the 256 byte symbols, the same
256 with `</w>`, one token per merge, and the two special tokens.  The real vocabulary (49,408
tokens) is learnt from a web corpus; ours is built from a word list (WORDS, then every word of the
evaluation datasets' class names): every listed word (and a few listed sub-word pieces) becomes
one token, and anything else falls back to shorter pieces and
single bytes, which is how BPE treats rare words.  What FA-Seg's prompt code depends on holds as
with the real one: words are one or several tokens, punctuation sticks to its neighbours, a long
text is many tokens.

Consistency: a word's merges are added after the merges that exist when it is reached, each
joining the first two pieces the current merges give; later merges rank lower than every earlier
one, so they never change how an earlier word splits (BPE always applies the best-ranked pair).
"""

from __future__ import annotations

from functools import lru_cache

# Sub-word pieces first (listed pieces without "</w>" may start a longer word), then words.
PIECES = ("aero",)
WORDS = """
a an the of on in at to with and or by for from under over near next behind front top
photo picture image view scene close up background foreground left right small large big little
red green blue yellow white black brown grey gray orange pink purple dark light bright colour coloured
shapes shape ball box sky ground grass tree trees wall floor road street room table water sea sand
airplane plane bicycle bike bird boat bottle bus car cat chair cow dining dog horse
motorbike motorcycle person people man woman child potted plant sheep sofa train tv monitor
bag bed bench book building cabinet ceiling cloth computer cup curtain door fence flower food
keyboard mountain mouse rock shelves sidewalk sign snow track truck window wood
traffic fire hydrant stop parking meter elephant bear zebra giraffe backpack umbrella handbag tie
suitcase frisbee skis snowboard sports kite baseball bat glove skateboard surfboard tennis racket
wine glass fork knife spoon bowl banana apple sandwich orange broccoli carrot hot pizza donut cake
couch toilet laptop remote cell phone microwave oven toaster sink refrigerator clock vase scissors
teddy hair drier toothbrush busy word house garden kitchen living bedroom office river lake field
sitting standing walking running playing lying eating holding riding parked flying two three some
is are it this that its their there object number thing things class item
""".split()


#: Words added after the datasets' words (so no earlier token changes id): synonyms the toy
#: world's captions use (eval/datasets/toy_world.py).
LATE_WORDS = ("kitten", "puppy")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable character table (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges to a word's symbols, best-ranked pair first (CLIP's algorithm)."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, 1 << 30), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == 1 << 30:
            break
        first, second = symbols[i], symbols[i + 1]
        out, j = [], 0
        while j < len(symbols):  # merge every occurrence of the pair, left to right
            if j < len(symbols) - 1 and symbols[j] == first and symbols[j + 1] == second:
                out.append(first + second)
                j += 2
            else:
                out.append(symbols[j])
                j += 1
        symbols = out
    return symbols


#: Class-name words real CLIP splits into several tokens, kept that way (VOC's "aeroplane" is
#: "aero" + "plane" there; the prompt tests rely on one multi-token class).
MULTI_TOKEN = frozenset({"aeroplane"})


def dataset_words() -> list[str]:
    """The words of every class name of the evaluation datasets (VOC to ADE20K-847), sorted.

    Real CLIP BPE has nearly all of them as one token each; without them the tiny vocabulary
    splits a large class list into many more tokens than a real checkpoint does, and the
    large-vocabulary benchmarks would time a harder case than any real checkpoint sees.
    """
    import re

    from faseg_rt.eval.datasets.registry import READERS

    found: set[str] = set()
    for reader in READERS:
        for name in reader.class_names:
            found.update(re.findall(r"[a-z]+", name.lower()))
    return sorted(found - set(WORDS) - MULTI_TOKEN)


@lru_cache(maxsize=1)
def clip_vocabulary() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(vocabulary in id order, merges in rank order) in CLIP's format."""
    table = _bytes_to_unicode()
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    words = list(WORDS) + dataset_words()
    words += [w for w in LATE_WORDS if w not in words]
    for text, final in [(p, False) for p in PIECES] + [(w, True) for w in words]:
        symbols = [table[b] for b in text.encode("utf-8")]
        if final:
            symbols[-1] += "</w>"
        pieces = _bpe(symbols, ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            pieces = _bpe(symbols, ranks)
    byte_chars = list(table.values())  # CLIP's id order: printable bytes first
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return tuple(vocab), tuple(merges)
