"""The floors of the Python code base: each package imports only its own floor and the floors below.

    signaling  ←  rtc  ←  server | peer  ←  tools

Every import counts, wherever it is written (module level, inside a function, under ``TYPE_CHECKING``):
a function-level import does not make an upward or sideways import acceptable.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MAY_IMPORT: dict[str, frozenset[str]] = {
    "signaling": frozenset(),
    "rtc": frozenset({"signaling"}),
    "server": frozenset({"signaling", "rtc"}),
    "peer": frozenset({"signaling", "rtc"}),
    "tools": frozenset({"signaling", "rtc", "server", "peer"}),
    "web": frozenset(),  # the browser client as package data (templates, static files): no Python imports
}
"""Package → the other project packages it may import (never itself listed: a package may import itself)."""


def imported_packages(path: Path, root: Path = ROOT) -> set[tuple[str, int]]:
    """(top-level package, line) of every import in ``path`` (a file under ``root``), relative ones resolved."""
    parts = path.relative_to(root).with_suffix("").parts
    package = parts[:-1]  # the package a module (or an __init__) belongs to
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add(((node.module or "").split(".")[0], node.lineno))
            else:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
                found.add((target[0] if target else "", node.lineno))
    return found


def violations(package: str) -> list[str]:
    others = set(MAY_IMPORT) - {package}
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for target, line in sorted(imported_packages(path)):
            if target in others and target not in MAY_IMPORT[package]:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return out


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_package_imports_only_downward(package: str) -> None:
    assert violations(package) == []


def test_the_floors_have_no_cycle() -> None:
    done: set[str] = set()

    def visit(package: str, path: tuple[str, ...]) -> None:
        assert package not in path, f"import cycle: {' → '.join((*path, package))}"
        for lower in MAY_IMPORT[package]:
            visit(lower, (*path, package))
        done.add(package)

    for package in MAY_IMPORT:
        visit(package, ())
    assert done == set(MAY_IMPORT)


def imported_modules(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The project modules ``path`` imports (anywhere in the file), each named by its dotted name."""
    parts = path.relative_to(root).with_suffix("").parts
    package = parts[:-1]
    own = ".".join(package if parts[-1] == "__init__" else parts)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                base = ".".join([*package[: len(package) - (node.level - 1)], *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != own:
            found.add(name)
    return found


def module_cycles(root: Path = ROOT) -> list[list[str]]:
    """Every import cycle between the modules of the floors (function-level imports included)."""
    paths = {}
    for package in MAY_IMPORT:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: imported_modules(path, set(paths), root) for name, path in paths.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return cycles


def test_no_module_imports_itself_back() -> None:
    assert [" → ".join(cycle) for cycle in module_cycles()] == []


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    for package in MAY_IMPORT:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "peer" / "a.py").write_text("from .b import B\n")
    (tmp_path / "peer" / "b.py").write_text("def f():\n    from peer.a import A\n")
    assert module_cycles(tmp_path) == [["peer.a", "peer.b", "peer.a"]]


def test_every_shipped_package_has_a_floor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in include} == set(MAY_IMPORT)
    assert project["project"]["scripts"]["alcove"] == "tools.cli:main"


def test_function_level_and_relative_imports_count(tmp_path: Path) -> None:
    """The scanner itself: imports inside functions count, and ``from ..x`` names the package above."""
    sub = tmp_path / "server" / "sfu"
    sub.mkdir(parents=True)
    (sub / "__init__.py").write_text("from .worker import X\n")
    (sub / "worker.py").write_text("def f():\n    from peer import participant\n    from ..hub import Hub\n"
                                   "    import tools.cli\n")
    assert imported_packages(sub / "__init__.py", tmp_path) == {("server", 1)}
    assert imported_packages(sub / "worker.py", tmp_path) == {("peer", 2), ("server", 3), ("tools", 4)}


def test_the_server_and_the_cli_load_aiortc_only_when_media_needs_it() -> None:
    """aiortc is heavy: the server loads it when an SFU room starts, the CLI when a probe or benchmark runs."""
    code = "import sys, server.app, tools.cli; print(sorted(m for m in ('aiortc', 'av') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         timeout=60)
    assert out.stdout.strip() == "[]"
