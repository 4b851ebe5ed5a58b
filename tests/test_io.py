"""faseg_rt.io: atomic writes leave either the old file or the complete new one, readable by others."""
import os
import stat

import pytest

from faseg_rt.io import atomic_path, atomic_write_bytes, remove_stale_temps


def test_written_file_has_umask_permissions_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.png", b"x")
        os.umask(0o027)
        atomic_write_bytes(tmp_path / "b.png", b"y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.png").stat().st_mode) == 0o640


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "mask.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png"]


def test_stale_temporaries_of_named_files_are_removed_and_nothing_else(tmp_path):
    # what a writer killed between mkstemp and rename leaves: .<name>.<random>.tmp
    stale = [tmp_path / ".a.png.x1y2z3.tmp", tmp_path / ".a.png.other.tmp", tmp_path / ".b.json.q9.tmp"]
    keep = [tmp_path / ".c.png.r4.tmp", tmp_path / "a.png", tmp_path / ".hidden", tmp_path / "x.tmp"]
    for f in stale + keep:
        f.write_bytes(b"half")
    removed = remove_stale_temps(tmp_path, {"a.png", "b.json"})
    assert sorted(removed) == sorted(stale)
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temps(tmp_path / "missing", {"a.png"}) == []
