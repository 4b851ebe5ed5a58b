"""Small file helpers shared by the CLI, results and evaluation: atomic writes, palettes.

Every output file is written to a temporary name in the same directory and renamed into place,
so a crash or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    The finished file gets the permissions a plain `open(path, "w")` would give (0666 minus the
    umask), not mkstemp's private 0600: masks written for a labelling team must be readable by it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_stale_temps(directory: str | os.PathLike, names) -> list[Path]:
    """Delete the temporary files `atomic_path` left in `directory` for the files `names`.

    A process killed between creating its temporary file and renaming it (SIGKILL, a lost node,
    power) leaves `.<name>.<random>.tmp` behind; a rerun that is about to write `name` again
    calls this first, so a resumed run leaves no temporary files.  Only temporaries of the
    given names are touched (never another program's files).  Returns the paths removed.
    """
    directory, wanted, removed = Path(directory), set(names), []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        n = entry.name
        if n.startswith(".") and n.endswith(".tmp") and n[1:-4].rpartition(".")[0] in wanted:
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    return removed


def _umask() -> int:
    """The process umask: from /proc on Linux (no side effect), else by setting and restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def color_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n x 3 uint8): colour i spreads the bits of i over R, G, B.

    Index 0 is black (background), 1 dark red, 2 dark green, ...; 255 (ignore) is cream-white.
    """
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def save_label_png(labels: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (H, W) integer label map (values 0..255) as a palette PNG, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError("label values must lie in 0..255 to fit a palette PNG")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(color_palette().reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a palette (or gray) PNG label map as (H, W) uint8 class indices."""
    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(f"{path}: expected a palette or gray label PNG, got mode {img.mode}")
        return np.array(img, dtype=np.uint8)
