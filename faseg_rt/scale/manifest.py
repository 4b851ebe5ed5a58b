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


#: A row's own fields; every other field is a job setting (job_settings and label's extras).
ROW_FIELDS = ("input", "output", "status", "error", "frontend")


class SettingsConflictError(FASegError):
    """OUT holds finished masks, made with other settings, that this job would replace.

    `diff`: setting -> (value in the manifest, value now); `count`: how many masks."""

    def __init__(self, out: Path, count: int, diff: dict, flag: str = "overwrite=True"):
        self.out, self.count, self.diff = out, count, diff
        super().__init__(self.describe(flag))

    def describe(self, flag: str) -> str:
        """The one line, naming the flag that allows replacing (the CLI: --overwrite)."""
        def short(v):
            text = repr(v)
            return text if len(text) <= 60 else text[:57] + "..."

        what = "; ".join(f"{k}: {short(old)} there, {short(new)} now" for k, (old, new) in self.diff.items())
        return (f"{self.out} holds {self.count} mask(s) this run would replace, made with other "
                f"settings ({what}); pass {flag} to replace them, or use another output directory")


def settings_conflicts(out: Path, settings: dict, outputs=None) -> tuple[int, dict]:
    """(masks, {setting: (there, now)}) of the finished rows in OUT/manifest.jsonl whose mask
    exists, is one of `outputs` (None: any) and was made with settings other than `settings`.
    Reads the manifest only: no Ray, nothing written."""
    out = Path(out)
    manifest = Manifest(out / MANIFEST_NAME).load()
    settings = json.loads(json.dumps(settings, sort_keys=True))  # as a row holds it (tuples: lists)
    count, diff = 0, {}
    for row in manifest.rows.values():
        name = row.get("output")
        if row.get("status") != "ok" or not name or (outputs is not None and name not in outputs):
            continue
        there = {k: v for k, v in row.items() if k not in ROW_FIELDS}
        keys = [k for k in dict.fromkeys([*settings, *there]) if there.get(k) != settings.get(k)]
        if keys and (out / name).is_file():
            count += 1
            for k in keys:
                diff.setdefault(k, (there.get(k), settings.get(k)))
    return count, diff


def check_settings(out: Path, settings: dict, outputs=None) -> None:
    """Refuse, before any work, to replace finished masks made with other settings
    (SettingsConflictError); eval refuses to mix settings in one folder the same way."""
    count, diff = settings_conflicts(out, settings, outputs)
    if count:
        raise SettingsConflictError(Path(out), count, diff)


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
