"""Build records: each built file (ONNX graph, TensorRT plan) gets `<file>.json` with the key it was
built from; a rerun reuses a file whose key matches and whose bytes still hash as recorded.

Shared by the ONNX export (engines/build.py) and the TensorRT build (engines/tensorrt_build.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from faseg_rt.engines.file_hash import file_sha256
from faseg_rt.engines.manifest import check_files


def record_path(out: Path, file: str) -> Path:
    return out / f"{file}.json"


def up_to_date(out: Path, file: str, key: dict) -> dict | None:
    """The record of `file` if it was built with `key` and its files are intact, else None."""
    rec_path = record_path(out, file)
    if not rec_path.is_file():
        return None
    try:
        rec = json.loads(rec_path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("key") != key or check_files(out, rec):
        return None
    return rec


def reuse(out: Path, file: str, key: dict, force: bool, log, what: str) -> dict | None:
    """The manifest entry of `file` when it is up to date (and not --force), saying so; else None."""
    rec = None if force else up_to_date(out, file, key)
    if rec is None:
        return None
    log(f"[export] {what}: up to date ({file}), skipped")
    return rec["entry"]


def install(files: list[Path], out: Path) -> dict:
    """Move finished files from the work dir into `out` (data before the graph that needs it)."""
    shas = {}
    for f in sorted(files, key=lambda p: p.suffix != ".data"):
        shas[f.name] = file_sha256(f)
        os.replace(f, out / f.name)
    return shas
