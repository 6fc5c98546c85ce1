"""The package stays readable in one sitting per file (STYLE.md): no module over 400 lines, no
function over 60 lines of code (its docstring aside: a command's documented arguments are its
``--help``)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "halluc_cl"
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def _too_long(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                _code_lines(node) > MAX_FUNCTION_LINES:
            found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} "
                         f"({_code_lines(node)} lines)")
    return found


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_function_is_over_60_lines():
    assert [f for p in sorted(PACKAGE.rglob("*.py")) for f in _too_long(p)] == []


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "example.py"
    path.write_text(f'def long():\n    """Doc\n    string."""\n{body}\n', encoding="utf-8")
    assert len(_too_long(path, tmp_path)) == 1  # 61 lines of code: the def and 60 more
    path.write_text(f'def short():\n    """Doc\n    string."""\n{body[:body.rindex(chr(10))]}\n',
                    encoding="utf-8")
    assert _too_long(path, tmp_path) == []
