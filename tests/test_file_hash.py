"""The engines' sha256 cache (faseg_rt.engines.file_hash, review point F16): a remembered hash is
served only while the file's identity (inode, size, mtime, ctime) is unchanged, and every hash it
returns equals hashlib's over the file's bytes."""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import pytest

from faseg_rt.engines import file_hash


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Cache in tmp, every file big enough and settled; counts the files actually read."""
    monkeypatch.setenv("FASEG_RT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FASEG_RT_HASH_CACHE", raising=False)
    monkeypatch.setattr(file_hash, "MIN_BYTES", 0)
    monkeypatch.setattr(file_hash, "SETTLE_S", 0.0)
    reads = []
    real = file_hash.hash_bytes
    monkeypatch.setattr(file_hash, "hash_bytes", lambda p, *a: reads.append(str(p)) or real(p, *a))
    return reads


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_second_hash_comes_from_the_cache(counted, tmp_path):
    f = write(tmp_path / "w.bin", os.urandom(5000))
    assert file_hash.file_sha256(f) == sha(f)
    assert file_hash.file_sha256(f) == sha(f)
    assert len(counted) == 1  # read once
    assert (tmp_path / "cache" / file_hash.CACHE_NAME).is_file()


def test_same_size_rewrite_with_mtime_put_back_is_hashed_again(counted, tmp_path):
    f = write(tmp_path / "w.bin", b"a" * 4096)
    time.sleep(0.05)  # past the kernel's coarse timestamp tick, so the rewrite gets a new ctime
    first = file_hash.file_sha256(f)
    st = os.stat(f)
    with open(f, "r+b") as fh:  # same inode, same size, other bytes
        fh.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # what `touch -d` / `cp -p` can do
    assert os.stat(f).st_mtime_ns == st.st_mtime_ns and os.stat(f).st_size == st.st_size
    assert file_hash.file_sha256(f) == sha(f) != first  # ctime moved: recomputed
    assert len(counted) == 2


def test_a_replaced_file_is_hashed_again(counted, tmp_path):
    f = write(tmp_path / "w.bin", b"x" * 4096)
    file_hash.file_sha256(f)
    other = write(tmp_path / "other.bin", b"y" * 4096)
    shutil.copystat(f, other)  # same size and mtime, new inode
    os.replace(other, f)
    assert file_hash.file_sha256(f) == sha(f) == hashlib.sha256(b"y" * 4096).hexdigest()
    assert len(counted) == 2


def test_a_file_changed_just_now_is_not_remembered(counted, tmp_path, monkeypatch):
    monkeypatch.setattr(file_hash, "SETTLE_S", 3600.0)  # "just now": within the settle window
    f = write(tmp_path / "w.bin", os.urandom(100))
    assert file_hash.file_sha256(f) == sha(f)
    assert file_hash.file_sha256(f) == sha(f)
    assert len(counted) == 2  # a write in the same timestamp tick could go unnoticed: not cached


def test_a_corrupt_or_unwritable_cache_only_means_hashing_again(counted, tmp_path, monkeypatch):
    f = write(tmp_path / "w.bin", os.urandom(100))
    store = tmp_path / "cache" / file_hash.CACHE_NAME
    store.parent.mkdir()
    store.write_text("{not json")
    assert file_hash.file_sha256(f) == sha(f)
    assert file_hash.file_sha256(f) == sha(f) and len(counted) == 1  # rewritten, then used
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory should be")
    monkeypatch.setenv("FASEG_RT_CACHE_DIR", str(blocked))
    g = write(tmp_path / "g.bin", os.urandom(100))
    assert file_hash.file_sha256(g) == sha(g)  # nothing raised, still right


def test_switched_off_and_small_files_are_always_read(counted, tmp_path, monkeypatch):
    f = write(tmp_path / "w.bin", os.urandom(100))
    monkeypatch.setenv("FASEG_RT_HASH_CACHE", "0")
    file_hash.file_sha256(f)
    file_hash.file_sha256(f)
    monkeypatch.delenv("FASEG_RT_HASH_CACHE")
    monkeypatch.setattr(file_hash, "MIN_BYTES", 1 << 20)
    file_hash.file_sha256(f)
    file_hash.file_sha256(f)
    assert len(counted) == 4
    assert not (tmp_path / "cache").exists()


def test_the_cache_keeps_at_most_max_entries(counted, tmp_path, monkeypatch):
    monkeypatch.setattr(file_hash, "MAX_ENTRIES", 3)
    files = [write(tmp_path / f"{i}.bin", bytes([i]) * 10) for i in range(5)]
    for f in files:
        file_hash.file_sha256(f)
    import json

    kept = json.loads((tmp_path / "cache" / file_hash.CACHE_NAME).read_text())
    assert list(kept) == [os.path.realpath(f) for f in files[2:]]  # the newest three
