"""The import rules of the package layout, enforced by the test suite.

Rules a-e (which layer may import which, and what the pure core may never import) are import-linter
contracts in pyproject.toml, so ``lint-imports`` checks them from the command line as well. Rule f, no
import cycle between any two modules of tickguard or ibfake, is checked here on grimp's graph.
Imports under TYPE_CHECKING and inside functions count for every rule.

Both checks run in a subprocess on a given source tree: this one, and copies with a violation injected,
which prove that the checks see what they must reject. Run this file as a script to check the packages
found first on sys.path: ``python tests/architecture/test_import_rules.py [contracts] [cycles]``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
PYPROJECT = REPO / "pyproject.toml"
PACKAGES = ("tickguard", "ibfake")
CHECKS = ("contracts", "cycles")


# ------------------------------------------------------------------------------------------ the checks


def lint_contracts() -> int:
    """import-linter's contracts from pyproject.toml; prints its report, returns its exit status."""
    from importlinter.cli import lint_imports

    return lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)


def import_cycles() -> list[str]:
    """One description per strongly connected component of the module import graph (empty: acyclic)."""
    import grimp

    graph = grimp.build_graph(
        *PACKAGES, include_external_packages=False, exclude_type_checking_imports=False, cache_dir=None
    )
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules) for m in sorted(graph.modules)}
    reports = []
    for component in _strongly_connected(edges):
        members = set(component)
        lines = [f"import cycle between {len(component)} modules: {', '.join(component)}"]
        lines.append("  for example: " + " -> ".join(_shortest_cycle(edges, members, component[0])))
        lines.append("  imports inside the cycle:")
        for importer in component:
            for imported in edges[importer]:
                if imported in members:
                    details = graph.get_import_details(importer=importer, imported=imported)
                    where = ", ".join(f"l.{d['line_number']}: {d['line_contents']}" for d in details)
                    lines.append(f"    {importer} -> {imported} ({where})")
        reports.append("\n".join(lines))
    return reports


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(edges[succ])))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def _shortest_cycle(edges: dict[str, list[str]], members: set[str], start: str) -> list[str]:
    """A shortest import path from ``start`` back to itself inside one component."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in edges[node]:
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if succ in members and succ not in came_from:
                came_from[succ] = node
                queue.append(succ)
    raise AssertionError(f"{start} is on no cycle")  # cannot happen for a strongly connected component


def main(checks: list[str]) -> int:
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None, f"{package} is not importable"
        print(f"checking {package} in {Path(spec.origin).parent}")
    status = 0
    if "contracts" in checks:
        status |= lint_contracts()
    if "cycles" in checks:
        cycles = import_cycles()
        print("\n\n".join(cycles) if cycles else "no import cycles")
        status |= bool(cycles)
    return status


# ------------------------------------------------------------------------------------------ the tests


def run_checks(src: Path, *checks: str) -> tuple[int, str]:
    """Run this file as a script with ``src`` first on the path; returns its exit status and output."""
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *checks],
        cwd=src.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    for package in PACKAGES:  # the checks must have read the tree they were given, not an installed one
        assert f"checking {package} in {src / package}\n" in output, output
    return proc.returncode, output


@pytest.fixture
def src_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "src"
    for package in PACKAGES:
        shutil.copytree(SRC / package, copy / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return copy


TYPE_CHECKING_IMPORT = "import typing\n\nif typing.TYPE_CHECKING:\n    {}\n"
FUNCTION_IMPORT = "def _injected() -> None:\n    {}\n"


def inject(src: Path, module: str, code: str) -> None:
    """Append ``code`` to ``module`` (a dotted name) in the tree ``src``; creates the module if missing."""
    path = src.joinpath(*module.split(".")).with_suffix(".py")
    text = path.read_text() if path.exists() else ""
    path.write_text(text + "\n" + code.strip() + "\n")


def test_layer_contracts_hold() -> None:
    status, output = run_checks(SRC, "contracts")
    assert status == 0, f"the tree breaks an import contract of pyproject.toml:\n{output}"


def test_no_import_cycles() -> None:
    status, output = run_checks(SRC, "cycles")
    assert status == 0, f"import cycles:\n{output}"


@pytest.mark.parametrize("external", ["sqlalchemy", "asyncio"])
def test_contracts_reject_core_importing_io(src_copy: Path, external: str) -> None:
    inject(src_copy, "tickguard.core.model", f"import {external}")
    status, output = run_checks(src_copy, "contracts")
    assert status == 1, output
    assert "a. tickguard.core is pure domain: no other layer, no I/O, threads or outside services BROKEN" in output
    assert f"tickguard.core is not allowed to import {external}:" in output
    assert f"tickguard.core.model -> {external} (l." in output


def test_contracts_reject_each_rule_violation(src_copy: Path) -> None:
    """One forbidden import per rule, some hidden under TYPE_CHECKING or in a function."""
    inject(src_copy, "tickguard.core.trades", TYPE_CHECKING_IMPORT.format("import tickguard.config"))
    inject(src_copy, "tickguard.core.volatility", FUNCTION_IMPORT.format("import threading"))
    inject(src_copy, "tickguard.adapters.ttl_cache", "import tickguard.runtime.engine")
    inject(src_copy, "tickguard.runtime.recovery", "from tickguard.interfaces import report")
    inject(src_copy, "tickguard.store.journal", FUNCTION_IMPORT.format("from tickguard.adapters import broker"))
    inject(src_copy, "ibfake.clock", "from tickguard.core import trades")
    inject(src_copy, "tickguard.runtime.engine", "import ibfake.wire")
    status, output = run_checks(src_copy, "contracts")
    assert status == 1, output
    for chain in [
        "tickguard.core.trades -> tickguard.config (l.",
        "tickguard.core.volatility -> threading (l.",
        "tickguard.adapters.ttl_cache -> tickguard.runtime.engine (l.",
        "tickguard.runtime.recovery -> tickguard.interfaces.report (l.",
        "tickguard.store.journal -> tickguard.adapters.broker (l.",
        "ibfake.clock -> tickguard.core.trades (l.",
        "tickguard.runtime.engine -> ibfake.wire (l.",
    ]:
        assert chain in output, f"not reported: {chain}\n{output}"
    assert "Contracts: 0 kept, 6 broken." in output, output


def test_cycles_are_reported(src_copy: Path) -> None:
    # the cycle this package once had: the session naming the gateway's class under TYPE_CHECKING
    inject(src_copy, "ibfake.session", TYPE_CHECKING_IMPORT.format("from ibfake.server import FakeGateway"))
    # and one closed by an import inside a function
    inject(src_copy, "tickguard.core.injected_cycle", "from tickguard.core.model import Side")
    inject(src_copy, "tickguard.core.model", FUNCTION_IMPORT.format("from tickguard.core import injected_cycle"))
    status, output = run_checks(src_copy, "cycles")
    assert status == 1, output
    cycles = [line for line in output.splitlines() if line.startswith("import cycle between")]
    assert any("ibfake.server" in line and "ibfake.session" in line for line in cycles), output
    assert "    ibfake.session -> ibfake.server (l." in output, output
    assert (
        "import cycle between 2 modules: tickguard.core.injected_cycle, tickguard.core.model\n"
        "  for example: tickguard.core.injected_cycle -> tickguard.core.model -> tickguard.core.injected_cycle"
    ) in output, output


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(CHECKS)))
