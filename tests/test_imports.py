"""The package's import direction (README, "Layout"): each layer imports only layers below it.

    io, errors -> facts, distributed -> lm -> synthetic -> data, metrics, methods -> runtime
    -> train -> experiments -> analysis, probing -> api -> cli

(``regularizers`` is the former name of ``methods``, kept for old configs' class paths.)

Checked on the source (every ``import`` statement, including those inside functions), so a
lazy import that hides a cycle fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "halluc_cl"
LAYERS = [("errors", "io"), ("facts", "distributed"), ("lm",), ("synthetic",),
          ("data", "metrics", "methods"), ("runtime", "regularizers"), ("train",),
          ("experiments",), ("analysis", "probing"), ("api",), ("cli",)]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """The top-level room of ``halluc_cl.<room>[.…]`` (``__init__`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, line) of every ``halluc_cl`` import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "halluc_cl" else \
                [f"halluc_cl.{alias.name}" for alias in node.names]
            found += [(n, node.lineno) for n in names if n.startswith("halluc_cl")]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("halluc_cl")]
    return found


def _modules() -> list[tuple[str, Path]]:
    return [(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts), p)
            for p in sorted(PACKAGE.rglob("*.py"))]


def test_every_room_has_a_layer():
    rooms = {_unit(module) for module, _ in _modules()} - {"__init__"}
    assert rooms <= set(RANK), f"rooms without a layer: {sorted(rooms - set(RANK))}"


def test_imports_run_one_way():
    wrong = []
    for module, path in _modules():
        here = _unit(module)
        for target, line in _imports(path):
            there = _unit(target)
            if there in (here, "__init__"):
                continue
            if RANK[there] >= RANK[here] and {here, there} != {"errors", "io"}:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_nothing_imports_the_cli():
    importers = [f"{path.name}:{line}" for module, path in _modules() if module != "halluc_cl.cli"
                 for target, line in _imports(path) if target == "halluc_cl.cli"]
    assert importers == []


@pytest.mark.parametrize("bad", ["halluc_cl.experiments.fit", "halluc_cl.cli"])
def test_the_check_sees_a_wrong_import(tmp_path, bad):
    path = tmp_path / "x.py"
    path.write_text(f"def f():\n    import {bad}\n")
    assert _imports(path) == [(bad, 2)]
    assert RANK[_unit(bad)] > RANK["train"]  # so train importing it is caught
