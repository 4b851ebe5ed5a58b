"""The segmenter's LRU caches of prompt embeddings: per vocabulary bounded in bytes, per full
prompt bounded in entries.

A vocabulary's class prompts (its 77-token chunks, J of them) do not depend on the caption, so
their embeddings (J, 77, D) are cached per class list: with captions that differ per image, a
fixed vocabulary is still encoded once per process. Entries are evicted least recently used
first when their total size passes the budget; a single vocabulary larger than the whole budget
is refused up front by the segmenter (see `Segmenter.check_vocabulary`).

The full prompts' embeddings (caption + classes -> the (77, D) full prompt and its DualPrompts)
live in the same kind of cache, bounded by a number of entries instead (`max_entries`); they hold
no class-prompt chunks, so the chunks live in one place, under the byte budget.

An entry counts the bytes it keeps alive (`pinned_bytes`): the whole storage under each of its
tensors, so a view into a larger tensor is counted as that tensor.  The segmenter stores compact
copies (`compact`), so what an entry counts is what it needs.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Hashable

import torch


def _storages(value, seen: dict) -> None:
    """Add {storage key: bytes} of every tensor inside value (tensors, tuples, lists, dicts,
    dataclasses) to seen."""
    if isinstance(value, torch.Tensor):
        st = value.untyped_storage()
        seen[(str(value.device), st.data_ptr())] = st.nbytes()
    elif isinstance(value, (tuple, list)):
        for v in value:
            _storages(v, seen)
    elif isinstance(value, dict):
        for v in value.values():
            _storages(v, seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _storages(getattr(value, f.name), seen)


def pinned_bytes(value) -> int:
    """Bytes of the storages a value keeps alive: each tensor's whole storage (a view pins its
    base), each storage once."""
    seen: dict = {}
    _storages(value, seen)
    return sum(seen.values())


def compact(t: torch.Tensor) -> torch.Tensor:
    """t itself when it owns exactly its bytes, else a contiguous copy (a view of a larger
    tensor would keep that tensor alive)."""
    if t.untyped_storage().nbytes() == t.numel() * t.element_size() and t.is_contiguous():
        return t
    return t.clone(memory_format=torch.contiguous_format)


class VocabularyCache:
    """Thread-safe LRU: key (a normalised class tuple) -> (J, 77, D) chunk embeddings, evicting
    once the entries' pinned bytes (`pinned_bytes`: whole storages) pass `max_bytes`, or once
    there are more than `max_entries` entries (values without tensors count 0 bytes: bound
    those by entries)."""

    def __init__(self, max_bytes: float = float("inf"), max_entries: int | None = None):
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def nbytes(value) -> int:
        return pinned_bytes(value)

    @property
    def bytes(self) -> int:
        """What the entries count now (their pinned bytes)."""
        return self._bytes

    def items(self) -> list:
        """(key, value) pairs, least recently used first (a snapshot)."""
        with self._lock:
            return list(self._entries.items())

    def get(self, key: Hashable) -> torch.Tensor | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def put(self, key: Hashable, value) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self._bytes += self.nbytes(value)
            while len(self._entries) > 1 and (self._bytes > self.max_bytes or (
                    self.max_entries is not None and len(self._entries) > self.max_entries)):
                _, old = self._entries.popitem(last=False)
                self._bytes -= self.nbytes(old)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._entries


def device_token_matrix(cache: VocabularyCache, prompts, j: int, text_len: int, device) -> torch.Tensor:
    """prompts' (j * text_len, K) token matrix (DualPrompts.token_matrix, padded chunks: 0) on
    `device`, cached per vocabulary in `cache`: a repeated vocabulary costs no host work and no
    host-to-device copy (12 MB at 1000 classes)."""
    tm = cache.get((prompts.classes, j))
    if tm is None:
        tm = prompts.token_matrix(text_len)
        tm = torch.nn.functional.pad(tm, (0, 0, 0, j * text_len - tm.shape[0])).to(device)
        cache.put((prompts.classes, j), tm)
    return tm
