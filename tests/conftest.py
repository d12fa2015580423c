"""Shared fixtures: the anyio backend, a clean log scrubber."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from watcher.daemon.logging import SCRUBBER


@pytest.fixture
def anyio_backend() -> str:
    """The daemon targets asyncio (anyio's default backend)."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _fresh_scrubber() -> Iterator[None]:
    SCRUBBER.clear()
    yield
    SCRUBBER.clear()
