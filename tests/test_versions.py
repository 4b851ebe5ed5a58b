"""How the engines manifest reads and compares library versions (engines/versions.py).

torch's default PyPI wheel reports "2.14.1" in its metadata and "2.14.1+cu130" as
`torch.__version__`; the wheel from PyTorch's CPU index reports "2.13.0+cpu" in both.  These
tests run the one rule against both forms with faked metadata, so the suite proves it does not
depend on which torch wheel is installed.
"""

from __future__ import annotations

from importlib import metadata

import pytest

from faseg_rt.engines import manifest, versions
from faseg_rt.engines.versions import package_version, release, same_release, version_problems


@pytest.mark.parametrize("a, b, same", [
    ("2.14.1", "2.14.1+cu130", True),     # PyPI wheel: metadata vs torch.__version__
    ("2.13.0+cpu", "2.13.0+cpu", True),   # PyTorch's CPU wheel: both carry the label
    ("2.14.1+cpu", "2.14.1+cu130", True),  # another build of the same release
    ("2.13.0+cpu", "2.14.1", False),      # another release
    ("2.14.1", None, False),              # not installed
    (None, None, True),                   # recorded as absent, still absent
])
def test_same_release_ignores_only_the_local_label(a, b, same):
    assert same_release(a, b) is same
    assert same_release(b, a) is same


def test_release_strips_the_local_label():
    assert release("2.14.1+cu130") == "2.14.1" and release("1.20.1") == "1.20.1" and release(None) is None


def _fake_metadata(monkeypatch, table):
    def version(dist):
        if dist not in table:
            raise metadata.PackageNotFoundError(dist)
        return table[dist]

    monkeypatch.setattr(versions.metadata, "version", version)


def test_cuda_wheel_metadata_matches_a_manifest_written_with_either_form(monkeypatch):
    """A manifest written under the PyPI CUDA wheel (metadata "2.14.1") or holding the module's
    "2.14.1+cu130" passes under either; a real version change is still refused, full strings shown."""
    _fake_metadata(monkeypatch, {"torch": "2.14.1", "diffusers": "0.35.0", "transformers": "4.56.0",
                                 "onnxruntime-gpu": "1.22.0"})
    here = manifest.installed_versions()
    assert here["torch"] == "2.14.1" and here["onnxruntime"] == "1.22.0" and here["onnx"] is None
    checked = manifest.CHECKED_VERSIONS["onnxruntime"]
    for torch_recorded in ("2.14.1", "2.14.1+cu130", "2.14.1+cpu"):
        assert version_problems(dict(here, torch=torch_recorded), here, checked) == []
    problems = version_problems(dict(here, torch="2.13.0+cpu"), here, checked)
    assert problems == ["torch: built with 2.13.0+cpu, installed 2.14.1"]


def test_package_version_reads_alternative_distributions(monkeypatch):
    _fake_metadata(monkeypatch, {"tensorrt-cu13": "10.13.0"})
    assert package_version("tensorrt") == "10.13.0"
    assert package_version("onnxruntime") is None
    from faseg_rt import __version__

    assert package_version("faseg_rt") == __version__
