"""Unit tests run on virtual time (tests/virtual_time.py); a module that waits on real
sockets sets ``anyio_backend`` back to asyncio."""

from __future__ import annotations

from typing import Any

import pytest
from virtual_time import virtual_backend


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """trio on a MockClock: sleeps and timeouts cost no real time."""
    return virtual_backend()
