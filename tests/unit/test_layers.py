"""The rooms of watcher/ import only downwards (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2] / "watcher"

# folder -> the top-level parts of watcher it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "sources": {"core", "clock"},
    "notify": {"core", "clock"},
    "config": {"core", "sources", "notify", "clock"},
    "upstreams": {"core", "sources", "config", "clock"},
    "simulator": {"core", "http_server"},
}


def imported(path: Path) -> set[str]:
    """The ``watcher.<part>`` modules a file imports, at any depth of the file."""
    parts: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        parts.update(n.split(".")[1] for n in names if n.startswith("watcher.") and "." in n)
    return parts


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_downwards(room: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports watcher.{part}"
        for path in (ROOT / room).rglob("*.py")
        for part in imported(path) - ALLOWED[room] - {room}
    }
    assert not wrong, sorted(wrong)


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _graph() -> dict[str, set[str]]:
    """Module -> the watcher modules it imports (``TYPE_CHECKING`` imports included)."""
    paths = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def test_no_import_cycles() -> None:
    """No module reaches itself through its imports, not even for type checking only."""
    graph = _graph()
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph[module]):
            if dep in path:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in done:
                visit(dep, [*path, dep])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_modules_stay_small() -> None:
    """One concern a module: none grows past about 500 lines."""
    long = {
        str(p.relative_to(ROOT)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, long
