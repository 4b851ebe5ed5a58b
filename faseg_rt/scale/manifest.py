"""OUT/manifest.jsonl: one row per image and job, appended as results arrive; a rerun skips every
input whose latest row is "ok" for the same job settings and whose mask exists."""

from __future__ import annotations

import json
import os
from pathlib import Path

from faseg_rt.errors import FASegError

MANIFEST_NAME = "manifest.jsonl"


class Manifest:
    """OUT/manifest.jsonl: one JSON row per finished image; the latest row of an input wins.

    Rows are appended as they finish (one `write` of a whole line, then flush + fsync), not by
    rewriting the file per row: with millions of rows a rewrite per row costs O(n^2) I/O, while an
    append costs one line.  What a crash can leave is at most one torn last line; `load` ignores a
    line that is not valid JSON, and at the start of every run the file is compacted (one row per
    input) and rewritten atomically (temp file + rename), so a torn line never survives a run.
    An image whose row was lost is simply labelled again (its mask is rewritten identically).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        self._fh = None

    def load(self) -> "Manifest":
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a crash: that image is redone
                if isinstance(row, dict) and isinstance(row.get("input"), str):
                    self.rows[row["input"]] = row
        return self

    def compact(self) -> None:
        """Rewrite the file atomically with one (the latest) row per input."""
        from faseg_rt.io import atomic_write_bytes

        if self.rows or self.path.exists():
            data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows.values())
            atomic_write_bytes(self.path, data.encode("utf-8"))

    def append(self, row: dict) -> None:
        """Append one row durably; a full disk or lost permission is one clear FASegError."""
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write(json.dumps(row, sort_keys=True) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as e:
            self.close()
            raise FASegError(f"cannot append to {self.path} ({e.strerror or e}); the masks and rows "
                             "written so far are intact: free space or fix permissions, then rerun "
                             "the same command to resume") from None
        self.rows[row["input"]] = row

    def close(self) -> None:
        """Close the file; a flush that fails here (disk full) leaves at most a torn last line,
        which `load` skips."""
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass


def job_settings(classes, caption, threshold, model) -> dict:
    """The fields that change a mask: a row made with other settings is not 'done' for this job."""
    return {"classes": list(classes), "caption": caption, "threshold": threshold, "model": str(model)}


def is_done(row: dict | None, settings: dict, out: Path) -> bool:
    if row is None or row.get("status") != "ok":
        return False
    if any(row.get(k) != v for k, v in settings.items()):
        return False
    return bool(row.get("output")) and (out / row["output"]).is_file()


def frontend_record(res) -> str:
    """The manifest's "frontend" field of one result (JSON text: Ray rows carry strings)."""
    side = res.sidecar()
    side.pop("classes")  # the job's classes are already a field of every row
    return json.dumps(side, sort_keys=True)


def manifest_fields(row) -> dict:
    """Extra manifest fields from a worker row: {"frontend": {...}} for a finished image."""
    text = str(row.get("frontend") or "")
    return {"frontend": json.loads(text)} if text else {}
