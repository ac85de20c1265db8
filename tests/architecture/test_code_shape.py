"""Shape rules the linter cannot express: module length, and function length in the pure core.

A module past ~500 lines must say why at its top (a line starting ``Size:`` in its docstring); a function
of ``tickguard.core`` stays within 60 lines.  Complexity is ruff's job (C901 / PLR0912 in pyproject.toml).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
MAX_MODULE_LINES = 500
MAX_CORE_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted([*SRC.rglob("*.py"), *(ROOT / "bench").rglob("*.py")])


def oversized_modules(paths: list[Path], root: Path = ROOT) -> list[str]:
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines <= MAX_MODULE_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.startswith("Size:") for line in doc.splitlines()):
            out.append(f"{path.relative_to(root)}: {lines} lines and no 'Size:' reason in its docstring")
    return out


def long_functions(paths: list[Path], limit: int, root: Path = ROOT) -> list[str]:
    out = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} is {length} lines")
    return out


def test_no_module_past_500_lines_without_a_reason():
    assert oversized_modules(_modules()) == []


def test_core_functions_are_short():
    assert long_functions(sorted((SRC / "tickguard" / "core").rglob("*.py")), MAX_CORE_FUNCTION_LINES) == []


@pytest.mark.parametrize("reason", [False, True])
def test_the_size_rule_catches_a_long_module(tmp_path, reason):
    doc = '"""A module.\n\nSize: one table, kept whole.\n"""\n' if reason else '"""A module."""\n'
    path = tmp_path / "big.py"
    path.write_text(doc + "x = 1\n" * 600, encoding="utf-8")
    assert (oversized_modules([path], tmp_path) == []) is reason


def test_the_length_rule_catches_a_long_function(tmp_path):
    path = tmp_path / "f.py"
    path.write_text("def f():\n" + "    x = 1\n" * 70, encoding="utf-8")
    assert long_functions([path], 60, tmp_path) == ["f.py:1 f is 71 lines"]
