"""Class presence of caption-named candidates, measured on per-image files alone (no images).

The published FA-Seg repository ships, per dataset, each image's BLIP caption, its candidate
class list and the list of classes present in its ground truth (all JSON: image id -> string;
class lists are space-separated names, parsed by greedy longest match, see
`faseg_rt.eval.inputs`).  This scores three candidate sources against the ground-truth lists
with `PresenceCounts` (micro-averaged precision / recall over (image, class) pairs):

    caption    the classes the caption names (`faseg_rt.frontend.classes_in_caption`)
    published  the published candidate lists
    union      both, as a caption route united with a tagger would give

Images are those both the ground-truth and the captions file name (a captions file may cover a
subset: the published Gemini captions cover 252 VOC images); a missing published list counts as
empty, so the three sources are always scored on the same images.  Class
lists may spell names as the devkits do ("tvmonitor", "diningtable"): every name's compact
spelling is accepted next to the dataset's aliases.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.datasets.registry import READERS
from faseg_rt.eval.inputs import build_vocabulary, split_candidate_string
from faseg_rt.eval.presence import PresenceCounts
from faseg_rt.frontend.caption_classes import classes_in_caption
from faseg_rt.frontend.input_files import spelling_aliases

SOURCES = ("caption", "published", "union")
#: Halves of a captions file by a fixed hash of the image id (`in_split`).
SPLITS = ("all", "tuning", "held-out")


def in_split(image_id: str, split: str) -> bool:
    """Whether an image is in `split`: "all", or the half chosen by the first byte of the
    SHA-256 of its id's stem (even: "tuning", odd: "held-out").  Fixed, so a lexicon judged on
    the tuning half is reported on images it was never judged on."""
    if split == "all":
        return True
    stem = str(image_id).rsplit("/", 1)[-1].rsplit(".", 1)[0]
    odd = hashlib.sha256(stem.encode("utf-8")).digest()[0] % 2
    return (split == "held-out") == bool(odd)


def dataset_vocabulary(name: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """(classes FA-Seg is asked for, aliases incl. compact spellings) of a registered dataset."""
    readers = {r.name: r for r in READERS}
    if name not in readers:
        raise InvalidInputError(f"unknown dataset {name!r}; choose one of {', '.join(readers)}")
    reader = readers[name]
    classes = tuple(reader.class_names[1:] if reader.background else reader.class_names)
    aliases = spelling_aliases(classes)  # "tvmonitor", as segment / label's candidates files
    aliases.update(reader.aliases)
    return classes, aliases


def parse_class_lists(raw: Mapping[str, str], classes: Sequence[str],
                      aliases: Mapping[str, str] | None = None
                      ) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """Image id -> class names of each space-separated list, and the words matching no class."""
    vocab = build_vocabulary(classes, aliases)
    out, unknown = {}, set()
    for image_id, text in raw.items():
        known, bad = split_candidate_string(text or "", vocab)
        out[image_id] = known
        unknown.update(bad)
    return out, unknown


def unknown_words(raw: Mapping[str, str], classes: Sequence[str],
                  aliases: Mapping[str, str] | None = None) -> tuple[float, list[str]]:
    """(share of the words of all values that name no class, those words by first appearance):
    near 0 for class lists, high for captions ("a", "man", "riding", ...), so a captions file
    and a class-list file given the other's place can be told apart."""
    vocab = build_vocabulary(classes, aliases)
    words, unknown = 0, {}
    for text in raw.values():
        _, bad = split_candidate_string(text or "", vocab)
        tokens = [w.strip(",;").lower() for w in (text or "").split()]
        tokens = [w for w in tokens if w]
        words += len(tokens)
        for w in tokens:
            if w in bad:
                unknown[w] = unknown.get(w, 0) + 1
    return (sum(unknown.values()) / words if words else 0.0), list(unknown)


def caption_presence(captions: Mapping[str, str], truth: Mapping[str, Sequence[str]],
                     classes: Sequence[str],
                     published: Mapping[str, Sequence[str]] | None = None,
                     lexicon: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict]:
    """Presence summaries per source (SOURCES; "published" and "union" only with `published`).

    captions: image id -> caption; truth: image id -> classes present (only ids in both are
    scored); published: image id -> candidate classes.  Each summary is `PresenceCounts.summary()` (precision, recall,
    images, mean_candidates, max_candidates, mean_true_classes).
    """
    counts = {s: PresenceCounts() for s in (SOURCES if published is not None else SOURCES[:1])}
    for image_id, true in truth.items():
        if image_id not in captions:
            continue
        named = classes_in_caption(captions[image_id], classes, lexicon)
        counts["caption"].update(named, true)
        if published is not None:
            listed = published.get(image_id, ())
            counts["published"].update(listed, true)
            counts["union"].update(set(named) | set(listed), true)
    return {s: c.summary() for s, c in counts.items()}


def presence_table(results: Mapping[str, Mapping[str, dict]]) -> str:
    """Markdown: one row per (dataset, source) with precision, recall, classes per image."""
    lines = ["| dataset | candidates | precision | recall | classes per image | images |",
             "|---|---|---|---|---|---|"]

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    for dataset, by_source in results.items():
        for source, s in by_source.items():
            lines.append(f"| {dataset} | {source} | {fmt(s['precision'])} | {fmt(s['recall'])} | "
                         f"{fmt(s['mean_candidates'])} | {s['images']} |")
    return "\n".join(lines)
