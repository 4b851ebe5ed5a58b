"""Small file helpers shared by the CLI, results and evaluation: atomic writes, palettes.

Every output file is written to a temporary name in the same directory and renamed into place,
so a crash or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

import numpy as np
from PIL import Image

from faseg_rt.errors import InvalidInputError


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


def read_json_file(path: str | os.PathLike, what: str):
    """The JSON value in a user's file; a missing, unreadable or malformed file is one
    InvalidInputError line naming `what` ("config", "classes") and the path."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"{what} file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"cannot read {what} file {path} as JSON: {e}") from None


def output_name(path: str) -> str:
    """The mask file an input image is written to, OUT/<stem>.png, for a local path or a URI
    ("s3://bucket/x/y.jpg" -> "y.png"); `faseg-rt segment` and `faseg-rt label` name masks so."""
    return PurePosixPath(path.replace("\\", "/")).stem + ".png"


def check_collisions(inputs: Iterable[str]) -> set[str]:
    """Two inputs with one stem would overwrite each other's mask: refuse up front, before any
    model loads or any file is written.  Returns the output names the inputs write."""
    seen: dict[str, str] = {}
    for item in inputs:
        name = output_name(item)
        if name in seen:
            raise InvalidInputError(
                f"{item} and {seen[name]} would both write {name}; send them to different "
                "output directories (one run per source directory)")
        seen[name] = item
    return set(seen)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def color_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (n x 3 uint8): colour i spreads the bits of i over R, G, B.

    Index 0 is black (background), 1 dark red, 2 dark green, ...; 255 (ignore) is cream-white.
    The same rule extends past 255 (24 bits of the index), so 16-bit label maps get distinct
    colours too.
    """
    i = np.arange(n, dtype=np.int64)
    cmap = np.zeros((n, 3), dtype=np.int64)
    for j in range(8):
        for ch in range(3):
            cmap[:, ch] |= ((i >> (3 * j + ch)) & 1) << (7 - j)
    return cmap.astype(np.uint8)


def label_colors(labels: np.ndarray) -> np.ndarray:
    """(H, W) non-negative integer labels -> (H, W, 3) uint8 VOC-map colours (any id up to 2^24)."""
    labels = np.asarray(labels)
    top = int(labels.max()) + 1 if labels.size else 1
    return color_palette(top)[labels]


#: The largest label a mask file holds: palette PNGs up to 255, 16-bit grayscale PNGs above.
PALETTE_MAX_LABEL = 255
MAX_LABEL = 65535


def label_png_bytes(labels: np.ndarray) -> bytes:
    """An (H, W) integer label map encoded as a PNG: a palette PNG (VOC colours, pixel value =
    label) for values 0..255, as the benchmarks' masks; a 16-bit grayscale PNG (mode "I;16",
    pixel value = label) up to 65535 (vocabularies past 255 classes).  `load_label_png` reads both;
    the mask files and the service's answers are these bytes."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > MAX_LABEL):
        raise ValueError(f"label values must lie in 0..{MAX_LABEL} to fit a PNG label map")
    if not labels.size or labels.max() <= PALETTE_MAX_LABEL:
        img = Image.fromarray(labels.astype(np.uint8), mode="P")
        img.putpalette(color_palette().reshape(-1).tolist())
    else:
        img = Image.fromarray(labels.astype(np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_label_png(labels: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (H, W) integer label map as a PNG (`label_png_bytes`), atomically."""
    atomic_write_bytes(path, label_png_bytes(labels))


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map: palette or gray 8-bit PNG -> (H, W) uint8; 16-bit PNG or TIFF ->
    (H, W) uint16 (pixel value = class index)."""
    with Image.open(path) as img:
        if img.mode in ("P", "L"):
            return np.array(img, dtype=np.uint8)
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.array(img)
            if arr.size and (arr.min() < 0 or arr.max() > MAX_LABEL):
                raise ValueError(f"{path}: label values outside 0..{MAX_LABEL}")
            return arr.astype(np.uint16)
        raise ValueError(f"{path}: expected a palette, gray or 16-bit label image, got mode {img.mode}")
