"""sha256 of large files, remembered per file identity (review point F16).

Loading engines checks that the model weights (~4 GB for SD 1.5) and every graph and plan still
hash to what the manifest recorded: that check is what makes a wrong engine impossible to load
silently, but it re-read every byte in every process (tens of seconds).  Here a hash is
remembered with the file's identity and reused while that identity is unchanged.

Identity: (resolved path, device, inode, size, mtime_ns, ctime_ns), what git's index uses to
call a file unchanged without reading it.  Writing the file changes mtime and ctime; replacing
it (a copy, a download, a rename over it) gives a new inode and ctime; `touch -d`, `cp -p` and
`rsync -t` can set mtime but never ctime.  So a remembered hash is never served for other bytes.
The one gap is a write in the same timestamp tick as the hashing itself (git's "racily clean"
entries), so a hash is remembered only for a file unchanged for SETTLE_S seconds before hashing
and still unchanged after it.

The cache is a JSON file, $FASEG_RT_CACHE_DIR (default $XDG_CACHE_HOME/faseg_rt, or
~/.cache/faseg_rt) / sha256.json, replaced atomically; a missing, corrupt or unwritable cache only
means hashing again.  FASEG_RT_HASH_CACHE=0 turns it off.  Files under MIN_BYTES are not worth
an entry and are always hashed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

#: A file must be unchanged this long before it is hashed for its hash to be remembered.
SETTLE_S = 3.0  # above the coarsest common timestamp step (FAT's 2 s)
#: Smaller files are hashed every time (cheaper than a cache entry).
MIN_BYTES = 16 << 20
#: Entries kept; the oldest are dropped beyond this.
MAX_ENTRIES = 4096
CACHE_NAME = "sha256.json"


def cache_dir() -> Path:
    """Where the hash cache lives (see the module docstring)."""
    if os.environ.get("FASEG_RT_CACHE_DIR"):
        return Path(os.environ["FASEG_RT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "faseg_rt"


def hash_bytes(path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, streamed (weights and graphs can be several GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, from the cache when the file's identity is unchanged."""
    if os.environ.get("FASEG_RT_HASH_CACHE", "1") == "0":
        return hash_bytes(path)
    real = os.path.realpath(path)
    before = os.stat(real)
    if before.st_size < MIN_BYTES:
        return hash_bytes(real)
    store = cache_dir() / CACHE_NAME
    entry = _load(store).get(real)
    if isinstance(entry, dict) and entry.get("id") == _identity(before) and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    settled = time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) >= SETTLE_S * 1e9
    digest = hash_bytes(real)
    if settled and _identity(os.stat(real)) == _identity(before):
        _remember(store, real, _identity(before), digest)
    return digest


def _remember(store: Path, real: str, identity: list[int], digest: str) -> None:
    """Add one entry (re-reading the cache first, so concurrent writers lose little)."""
    from faseg_rt.io import atomic_write_bytes

    cache = _load(store)
    cache.pop(real, None)
    cache[real] = {"id": identity, "sha256": digest}
    for old in list(cache)[:-MAX_ENTRIES]:  # dicts keep insertion order: the oldest go first
        del cache[old]
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(store, json.dumps(cache).encode("utf-8"))
    except OSError:
        pass  # a read-only home or a full disk: the hash is still right, just not remembered
