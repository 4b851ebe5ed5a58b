"""What `faseg-rt label` and `faseg-rt segment` read: a directory, a glob, a list file, one image, or
URIs (s3://, gs://, ... listed through pyarrow's filesystems).  The output name of each input is
`faseg_rt.io.output_name`."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from faseg_rt.errors import InvalidInputError

#: File name suffixes taken from a directory or glob (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


#: Suffixes of a text file that lists one path or URI per line.
LIST_EXTENSIONS = (".txt", ".lst", ".list")


def is_uri(text: str) -> bool:
    return "://" in text


def path_key(path: str) -> str:
    """The form Ray Data's `path` column gives a file: URIs lose their scheme ("s3://b/k" -> "b/k")."""
    return path.split("://", 1)[1] if is_uri(path) else path


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _list_remote_dir(uri: str) -> list[str]:
    """Image files directly inside a remote directory URI (listed with pyarrow's filesystems)."""
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
    except Exception as e:  # pyarrow raises plain OSError / ArrowInvalid for bad URIs
        raise InvalidInputError(f"cannot list {uri}: {e}") from None
    scheme = uri.split("://", 1)[0]
    return sorted(f"{scheme}://{i.path}" for i in infos
                  if i.type == pafs.FileType.File and _is_image_name(i.path))


def _read_list_file(path: Path) -> list[str]:
    """One path or URI per line; blank lines and '#' comments skipped; relative to the file."""
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        items.append(line if is_uri(line) or os.path.isabs(line) else str(path.parent / line))
    return items


def resolve_inputs(inputs) -> list[str]:
    """A directory, glob, text file of paths/URIs, single image, or list of them -> input list.

    Local paths become absolute (that is the manifest's `input` key); URIs stay as given.
    Directories are not searched recursively (use a glob with ** for that).
    """
    if isinstance(inputs, (str, os.PathLike)):
        text = os.fspath(inputs)
        if is_uri(text):
            if any(c in text for c in "*?["):
                raise InvalidInputError(
                    f"globs are not supported for URIs ({text}); list the files in a text file")
            items = [text] if _is_image_name(text) else _list_remote_dir(text)
        elif any(c in text for c in "*?["):
            items = sorted(p for p in glob.glob(text, recursive=True)
                           if os.path.isfile(p) and _is_image_name(p))
        else:
            p = Path(text)
            if p.is_dir():
                items = sorted(str(f) for f in p.iterdir() if f.is_file() and _is_image_name(f.name))
            elif p.is_file() and p.suffix.lower() in LIST_EXTENSIONS:
                items = _read_list_file(p)
            elif p.exists():
                items = [text]
            else:
                raise InvalidInputError(
                    f"input {text} does not exist; give a directory, a glob, a text file of "
                    "paths/URIs or image files")
        if not items:
            raise InvalidInputError(f"no images found in {text} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    else:
        try:
            items = [os.fspath(x) for x in inputs]
        except TypeError:
            raise InvalidInputError(
                "inputs must be a directory, glob, text file, list of paths or a ray.data.Dataset; "
                f"got {type(inputs).__name__}") from None
        if not items:
            raise InvalidInputError("the input list is empty")
    out, seen = [], set()
    for item in items:
        item = item if is_uri(item) else os.path.abspath(item)
        if item not in seen:  # listing a file twice must not label it twice
            seen.add(item)
            out.append(item)
    return out


def resolve_many(inputs) -> list[str]:
    """Several command-line inputs (`faseg-rt label a.jpg photos/ 'x/*.png' list.txt`): each
    resolved as `resolve_inputs` resolves one (a missing path or an input without images is
    refused), in the order given, a file named twice kept once."""
    items = [item for text in inputs for item in resolve_inputs(text)]
    return list(dict.fromkeys(items))
