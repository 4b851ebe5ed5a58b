"""Dual prompts (spec step 1): the class prompt P', the full prompt P, and each class's tokens.

Each class's token positions are recorded while the class prompt is built from per-class token
ids, so any vocabulary works (repeated words, multi-token names, names no dataset list knows).
A vocabulary whose class prompt does not fit in the text encoder's 77 tokens is split into
chunks; every chunk is its own class prompt, and all chunks share one reconstruction pass.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch

from faseg_rt.errors import InvalidInputError
from faseg_rt.rules import normalize_classes

SEPARATOR = ", "  # between class names in P' (spec step 1)

# Hugging Face fast tokenizers keep their padding / truncation settings in the shared Rust
# object and change them per call, so two threads tokenizing at once (one padding to 77, one
# not) corrupt each other's results.  Every use of a tokenizer here holds this lock; building
# the prompts takes about a millisecond, so calls still overlap in everything that is slow.
_TOKENIZER_LOCK = threading.RLock()


@dataclass(frozen=True)
class ClassPrompt:
    """One class prompt (a chunk of the vocabulary).

    input_ids: 77 token ids (BOS first, padded).  spans[i] = [start, end) positions of
    classes[i]'s tokens in input_ids.
    """

    text: str
    input_ids: tuple[int, ...]
    classes: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class DualPrompts:
    """Both prompts of one (caption, classes) pair.

    full_ids: the 77 ids of P = "{caption} ; {P'}" (or P' alone), which flows through the UNet.
    chunks:   the class prompts whose keys give the class-aware cross-attention maps.
    """

    classes: tuple[str, ...]
    caption: str | None
    full_text: str
    full_ids: tuple[int, ...]
    full_truncated: bool
    chunks: tuple[ClassPrompt, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def token_matrix(self, seq_len: int = 77) -> torch.Tensor:
        """(J * seq_len, K) float32 averaging weights: column k has 1/n_k on class k's tokens.

        Multiplying the fused cross maps (..., J * seq_len) by it gives the K class maps.
        """
        m = torch.zeros(len(self.chunks) * seq_len, self.num_classes, dtype=torch.float32)
        k = 0
        for j, chunk in enumerate(self.chunks):
            for start, end in chunk.spans:
                m[j * seq_len + start: j * seq_len + end, k] = 1.0 / (end - start)
                k += 1
        return m


def _content_ids(tokenizer, text: str) -> list[int]:
    # verbose=False: a long vocabulary is measured here on purpose (then chunked), so the
    # tokenizer's "sequence length is longer than the specified maximum" log would be noise.
    return list(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])


def _padded_ids(tokenizer, text: str) -> tuple[int, ...]:
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True)["input_ids"]
    return tuple(int(i) for i in ids)


def _first_mismatch(ids, group, spans, pieces, classes) -> str:
    """The first class of a chunk whose tokens differ in the joined prompt (for the error)."""
    for i, (start, end) in zip(group, spans):
        if list(ids[start:end]) != pieces[i]:
            return classes[i]
    return classes[group[-1]]


def build_dual_prompts(tokenizer, classes: Sequence[str], caption: str | None = None,
                       chunks: tuple[ClassPrompt, ...] | None = None) -> DualPrompts:
    """Build P, P' chunks and token spans for `classes` (validated) and an optional caption.

    chunks: the class prompts an earlier call built for the same (normalised) classes; they do
    not depend on the caption, so passing them skips tokenising every class again.
    Thread-safe: the tokenizer is used under a lock (see _TOKENIZER_LOCK).
    """
    with _TOKENIZER_LOCK:
        classes = normalize_classes(classes)
        if chunks is None:
            chunks = _class_prompts(tokenizer, classes)
        elif tuple(c for chunk in chunks for c in chunk.classes) != classes:
            raise ValueError("chunks were built for another class list")
        return _dual_prompts(tokenizer, classes, caption, chunks)


def _class_prompts(tokenizer, classes: tuple[str, ...]) -> tuple[ClassPrompt, ...]:
    """The class prompts P'_j: classes packed greedily into 77-token chunks, with each class's
    token span recorded while its chunk is assembled."""
    capacity = tokenizer.model_max_length - 2  # BOS and EOS
    sep = _content_ids(tokenizer, SEPARATOR.strip())
    pieces = []
    for c in classes:
        ids = _content_ids(tokenizer, c)
        if not ids:
            raise InvalidInputError(f"class {c!r} has no tokens for the CLIP tokenizer; rename it")
        if len(ids) > capacity:
            raise InvalidInputError(
                f"class {c!r} is {len(ids)} tokens long; one class name must fit in {capacity} tokens")
        pieces.append(ids)

    # Greedy chunking: keep adding classes while the class prompt fits in 75 content tokens.
    groups: list[list[int]] = [[]]
    used = 0
    for i, ids in enumerate(pieces):
        need = len(ids) + (len(sep) if groups[-1] else 0)
        if groups[-1] and used + need > capacity:
            groups.append([])
            need, used = len(ids), 0
        groups[-1].append(i)
        used += need

    chunks = []
    for group in groups:
        content, spans = [], []
        for n, i in enumerate(group):
            if n:
                content += sep
            start = 1 + len(content)  # +1: BOS at position 0
            content += pieces[i]
            spans.append((start, start + len(pieces[i])))
        text = SEPARATOR.join(classes[i] for i in group)
        ids = _padded_ids(tokenizer, text)
        if list(ids[1:1 + len(content)]) != content:
            culprit = _first_mismatch(ids, group, spans, pieces, classes)
            raise InvalidInputError(
                f"class {culprit!r} does not keep its own tokens in the class prompt {text!r}: "
                "a name that ends (or starts) with punctuation or symbols such as '!' or an emoji "
                "merges with the ', ' separator; remove them or add a word")
        chunks.append(ClassPrompt(text, ids, tuple(classes[i] for i in group), tuple(spans)))
    return tuple(chunks)


def _dual_prompts(tokenizer, classes: tuple[str, ...], caption, chunks) -> DualPrompts:
    """The full prompt P for `caption` beside the class prompts `chunks`."""
    if caption is not None and not isinstance(caption, str):
        raise InvalidInputError(f"caption must be a string or None, got {type(caption).__name__}")
    caption = " ".join(caption.split()) if caption else None
    caption = caption or None
    capacity = tokenizer.model_max_length - 2  # BOS and EOS
    class_text = SEPARATOR.join(classes)
    full_text = f"{caption} ; {class_text}" if caption else class_text
    full_len = len(_content_ids(tokenizer, full_text))
    truncated = full_len > capacity
    if truncated:
        hint = " Shorten the caption to keep all of it." if caption else ""
        warnings.warn(
            f"the full prompt is {full_len} tokens; only the first {capacity} reach the UNet "
            f"(every class still gets its map, from the class prompts).{hint}", stacklevel=4)
    return DualPrompts(classes, caption, full_text, _padded_ids(tokenizer, full_text), truncated,
                       tuple(chunks))
