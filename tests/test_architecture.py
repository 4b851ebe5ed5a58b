"""The layering of docs/architecture.md, checked on the source: every import of every module of
faseg_rt/ (module level and inside functions alike, parsed with ast, nothing imported) goes to
its own unit or a lower layer, and the import graph has no cycle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "faseg_rt"
DOC = ROOT / "docs" / "architecture.md"


def layer_table() -> dict[str, int]:
    """name -> layer, from the table of docs/architecture.md (names joined by "+" are one unit,
    see `unit_of`)."""
    units = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]+)\|", line)
        if m:
            for unit in m.group(2).split(","):
                for name in unit.split("+"):
                    units[name.strip()] = int(m.group(1))
    return units


def joined_units() -> dict[str, str]:
    """name -> the unit it belongs to, for names joined by "+" in the table."""
    out = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*\d+\s*\|([^|]+)\|", line)
        if m:
            for unit in m.group(1).split(","):
                names = [n.strip() for n in unit.split("+")]
                out.update({n: names[0] for n in names})
    return out


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py under faseg_rt/ (a package by its __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict) -> list[tuple[str, int]]:
    """(imported faseg_rt module, line) for each import in the file, lazy ones included.

    `from X import Y` counts as importing X.Y when that is a module, else X."""
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.append((t, node.lineno))
    return found


def unit_of(module: str, table: dict[str, int]) -> str:
    """The most specific unit of the table that contains `module` ("faseg_rt.engines.build" ->
    "engines"; "faseg_rt.rules" -> "base" unless listed by name)."""
    rel = module.split(".")[1:]
    for n in range(len(rel), 0, -1):
        unit = ".".join(rel[:n])
        if unit in table:
            return joined_units().get(unit, unit)
    if not rel:
        return "faseg_rt"
    return "base" if len(rel) == 1 and not (PACKAGE / rel[0]).is_dir() else rel[0]


def graph():
    known = modules()
    return known, {m: imports(m, p, known) for m, p in known.items()}


def test_table_is_read():
    table = layer_table()
    assert table["cli"] > table["eval"] > table["segmenter"] > table["backends"] > table["method"] \
        > table["model"] > table["base"]


def test_every_package_has_a_layer():
    table = layer_table()
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    missing = sorted(packages - set(table))
    assert not missing, f"add {', '.join(missing)} to the layer table of docs/architecture.md"


def test_imports_only_go_down():
    table = layer_table()
    known, edges = graph()
    wrong = []
    for mod, targets in edges.items():
        src = unit_of(mod, table)
        for target, line in targets:
            dst = unit_of(target, table)
            if dst != src and table[dst] >= table[src]:
                wrong.append(f"{known[mod].relative_to(ROOT)}:{line} imports {target} "
                             f"({src}, layer {table[src]} -> {dst}, layer {table[dst]})")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None: depth-first search that
    keeps the current path; a back edge to a module on the path closes a cycle."""
    state, path = {}, []  # state: 1 = on the current path, 2 = finished

    def visit(v):
        state[v] = 1
        path.append(v)
        for w in sorted(edges.get(v, ())):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_no_import_cycles():
    _, edges = graph()
    # a submodule importing its own package's __init__ runs nothing new (Python imports parents first)
    plain = {m: {t for t, _ in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    cycle = find_cycle(plain)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("edges, cyclic", [({"a": {"b"}, "b": {"c"}, "c": set()}, False),
                                            ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
                                            ({"a": {"a"}}, True),
                                            ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False)])
def test_find_cycle(edges, cyclic):
    cycle = find_cycle(edges)
    assert (cycle is not None) == cyclic
    if cycle:
        assert cycle[0] == cycle[-1] and all(b in edges[a] for a, b in zip(cycle, cycle[1:]))


def test_checker_sees_lazy_and_relative_imports(tmp_path):
    """The parser finds an import inside a function and resolves `from . import x`."""
    known = {"faseg_rt.a": tmp_path / "a.py", "faseg_rt.b": tmp_path / "b.py", "faseg_rt": tmp_path / "__init__.py"}
    (tmp_path / "a.py").write_text("def f():\n    from faseg_rt import b\n    from . import b as c\n")
    assert imports("faseg_rt.a", known["faseg_rt.a"], known) == [("faseg_rt.b", 2), ("faseg_rt.b", 3)]
