"""What pyproject.toml promises: the `test` extra is built from the other extras by name (so a pin
is written once and cannot drift between them), and the wheels `bench gpu`'s preflight names are
the versions this environment runs."""

from __future__ import annotations

import importlib.metadata as md
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


@pytest.mark.parametrize("module,wheel", sorted(WHEELS.items()))
def test_the_preflight_names_the_installed_versions(module, wheel):
    dist, pin = wheel.split("==")
    try:
        installed = md.version(dist)
    except md.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed here: nothing to compare its pin with")
    assert installed == pin, f"gpu_plan.WHEELS pins {wheel}, this environment has {installed}"
