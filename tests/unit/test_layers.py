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
