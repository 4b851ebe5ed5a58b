"""The per-vocabulary cache of class-prompt embeddings, bounded in bytes.

A vocabulary's class prompts (its 77-token chunks, J of them) do not depend on the caption, so
their embeddings (J, 77, D) are cached per class list: with captions that differ per image, a
fixed vocabulary is still encoded once per process. Entries are evicted least recently used
first when their total size passes the budget; a single vocabulary larger than the whole budget
is refused up front by the segmenter (see `Segmenter.check_vocabulary`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Hashable

import torch


class VocabularyCache:
    """Thread-safe LRU: key (a normalised class tuple) -> (J, 77, D) chunk embeddings."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def nbytes(t: torch.Tensor) -> int:
        return t.numel() * t.element_size()

    def get(self, key: Hashable) -> torch.Tensor | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def put(self, key: Hashable, chunks: torch.Tensor) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = chunks
            self._bytes += self.nbytes(chunks)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                self._bytes -= self.nbytes(old)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes
