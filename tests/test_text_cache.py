"""The prompt-embedding caches count what their entries keep alive.

An entry that holds a view of a larger tensor keeps that tensor's whole storage alive, so the
byte budget counts storages (`pinned_bytes`); and the class-prompt chunks live only in the
per-vocabulary cache, so evicting a vocabulary frees them even while its full prompts stay cached.
"""

from __future__ import annotations

import gc
import weakref

import torch

from faseg_rt import Segmenter
from faseg_rt.text_cache import VocabularyCache, compact, pinned_bytes


def _storage_bytes(value) -> int:
    """The test's own count: every distinct storage under the tensors of a (nested) value."""
    found = {}
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, torch.Tensor):
            found[v.untyped_storage().data_ptr()] = v.untyped_storage().nbytes()
        elif isinstance(v, (tuple, list)):
            todo.extend(v)
        elif hasattr(v, "__dataclass_fields__"):
            todo.extend(getattr(v, f) for f in v.__dataclass_fields__)
    return sum(found.values())


def _check_counts(cache: VocabularyCache) -> None:
    entries = cache.items()
    for key, value in entries:
        assert _storage_bytes(value) <= cache.nbytes(value), key
    assert cache.bytes == sum(cache.nbytes(v) for _, v in entries)


def test_a_view_counts_its_whole_storage_and_compact_copies_only_the_view():
    big = torch.zeros(64, 77, 32)
    view = big[:1]
    assert pinned_bytes(view) == big.numel() * 4
    assert pinned_bytes((view, big[2:3], {"a": big})) == big.numel() * 4  # one storage, once
    cache = VocabularyCache(max_bytes=big.numel() * 4 - 1)
    cache.put("view", view)
    cache.put("other", torch.zeros(1))
    assert "view" not in cache  # the view pinned more than the budget: evicted first
    small = compact(view)
    assert torch.equal(small, view) and pinned_bytes(small) == view.numel() * 4
    assert compact(small) is small


def test_segmenter_caches_count_every_byte_they_pin_and_free_evicted_chunks(small_segmenter):
    s = small_segmenter
    chunk_bytes = 77 * s.backend.dims.text_dim * 4
    seg = Segmenter(s.backend, s.tokenizer, s.config, text_cache_mb=2.5 * chunk_bytes / 2**20)
    first = seg.encode_text(["cat", "dog"], caption="a pet")
    gone = weakref.ref(first.chunks)
    assert seg.encode_text(["cat", "dog"], caption="a pet").chunks is first.chunks
    del first
    for i in range(4):  # more vocabularies than the byte budget holds
        seg.encode_text([f"thing {i}", "sky"], caption=f"picture {i}")
    gc.collect()
    # the full prompt of ("a pet", cat/dog) is still cached, its chunks are not kept alive
    assert ("a pet", ("cat", "dog")) in seg._text_cache
    assert gone() is None
    for cache in (seg._text_cache, seg._vocab_cache, seg._token_mats):
        _check_counts(cache)
    for _, (prompts, full) in seg._text_cache.items():
        assert pinned_bytes(full) == full.numel() * full.element_size() == chunk_bytes
    assert seg._vocab_cache.bytes <= seg._vocab_cache.max_bytes
    # evicted chunks come back as the same embeddings
    again = seg.encode_text(["cat", "dog"], caption="a pet")
    assert torch.equal(again.chunks, s.encode_text(["cat", "dog"], caption="a pet").chunks)
