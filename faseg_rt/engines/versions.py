"""Library versions as the engines manifest records and compares them: one rule, used by the
export (recording), the backends' load-time check (comparing) and the mismatch message.

Reading: a version is the installed distribution's metadata version (importlib.metadata), so
nothing heavy (torch, onnx, tensorrt) is imported to learn it.

Comparing: a PEP 440 local label (the part after '+') names a build variant of one release, not
another release.  torch shows why it must be handled: the wheel from PyTorch's own CPU index
reports "2.13.0+cpu" both in its metadata and as `torch.__version__`, while the default wheel
from PyPI reports "2.14.1" in its metadata and "2.14.1+cu130" as `torch.__version__`.  The graphs
an exporter writes depend on the release (its exporter code and operators), not on which CUDA
the wheel links; TensorRT engines are tied to the TensorRT version and the GPU, which the
manifest checks separately.  So two versions match when their public parts (before '+') are
equal; the manifest keeps the full string, and a mismatch message shows both full strings.
"""

from __future__ import annotations

from importlib import metadata

from faseg_rt.version import __version__

#: Distributions that install a package under another name (GPU wheels, per-CUDA TensorRT).
ALTERNATIVE_DISTRIBUTIONS = {
    "onnxruntime": ("onnxruntime-gpu",),
    "tensorrt": ("tensorrt-cu12", "tensorrt-cu13", "tensorrt-cu11", "tensorrt_cu12", "tensorrt_cu13"),
}


def package_version(pkg: str) -> str | None:
    """The installed version of `pkg` as its metadata says ("2.14.1", "2.13.0+cpu"), or None."""
    if pkg == "faseg_rt":
        return __version__
    for dist in (pkg, *ALTERNATIVE_DISTRIBUTIONS.get(pkg, ())):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def release(version: str | None) -> str | None:
    """The public version without its local label: "2.14.1+cu130" -> "2.14.1"."""
    return None if version is None else version.split("+", 1)[0]


def same_release(a: str | None, b: str | None) -> bool:
    """True when two version strings name the same release, whatever their local labels."""
    return release(a) == release(b)


def installed_versions(packages) -> dict:
    """{package: package_version(package)} for each of `packages` (None when not installed)."""
    return {pkg: package_version(pkg) for pkg in packages}


def version_problems(recorded: dict, installed: dict, packages) -> list[str]:
    """One line per package of `packages` whose recorded and installed releases differ."""
    return [f"{pkg}: built with {recorded.get(pkg)}, installed {installed.get(pkg)}"
            for pkg in packages if not same_release(recorded.get(pkg), installed.get(pkg))]
