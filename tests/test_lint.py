"""`ruff check` (pyflakes F, pycodestyle E and W, 120 columns: pyproject.toml [tool.ruff]) is
clean over the package, the tests, the benchmarks and the export entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("faseg_rt", "tests", "benchmarks", "export")


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    if exe:
        return [exe]
    try:
        import ruff  # noqa: F401  (the wheel's module; its binary may sit outside PATH)
    except ImportError:
        pytest.skip("ruff is not installed (pip install -e '.[test]' brings it)")
    return [sys.executable, "-m", "ruff"]


def test_ruff_check_is_clean():
    p = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", *PATHS],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"ruff check found problems:\n{p.stdout[-4000:]}{p.stderr[-2000:]}"
