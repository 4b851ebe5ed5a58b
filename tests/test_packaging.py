"""What pyproject.toml promises: the `test` extra is built from the other extras by name (so a pin
is written once and cannot drift between them), and the wheels `bench gpu`'s preflight names are
versions the project's requirements accept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from faseg_rt.bench.gpu_plan import WHEELS

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _extras() -> dict[str, list[str]]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


def _name(req: str) -> str:
    return re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_the_test_extra_names_the_other_extras_and_repeats_none_of_their_pins():
    extras = _extras()
    test = extras["test"]
    self_refs = [r for r in test if _name(r) == "faseg-rt"]
    assert len(self_refs) == 1, test
    named = set(re.search(r"\[(.*)\]", self_refs[0]).group(1).split(","))
    assert named == {"dev", "onnx", "ray", "serve"}  # onnx-gpu and tensorrt need a GPU machine
    others = {_name(r) for extra in named for r in extras[extra]}
    repeated = [r for r in test if r not in self_refs and _name(r) in others]
    assert not repeated, f"pins written twice, in `test` and in another extra: {repeated}"


def _requirements() -> dict[str, list[str]]:
    """{distribution: [requirement strings]} over the dependencies and every extra."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    reqs: dict[str, list[str]] = {}
    for r in project["dependencies"] + [r for e in project["optional-dependencies"].values() for r in e]:
        reqs.setdefault(_name(r), []).append(r)
    return reqs


@pytest.mark.parametrize("module,wheel", sorted(WHEELS.items()))
def test_the_preflight_pins_satisfy_the_projects_requirements(module, wheel):
    """A wheel the GPU preflight names must be a version the project accepts.  (Not compared
    with this environment's installed version: a fresh install may take a newer release, and a
    README test command must not turn red when a registry publishes one.)"""
    from packaging.requirements import Requirement

    dist, pin = wheel.split("==")
    for req in _requirements().get(_name(dist), []):
        spec = Requirement(req).specifier
        assert spec.contains(pin, prereleases=True), f"gpu_plan.WHEELS pins {wheel}, pyproject requires {req}"
