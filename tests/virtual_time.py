"""Virtual time for async unit tests: trio's MockClock drives every anyio sleep,
timeout and deadline, and :class:`LoopClock` makes the project's Clock read it too.

With ``autojump_threshold=0`` the clock jumps to the next deadline as soon as every
task waits, so a test of a 10 s grouping window takes no real time and cannot be
late on a loaded machine. Tests that wait on real sockets keep the asyncio backend:
a jumping clock would fire their timeouts while the kernel still works.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from trio.testing import MockClock

__all__ = ["EPOCH", "LoopClock", "virtual_backend"]

EPOCH = datetime(2026, 11, 22, 10, tzinfo=UTC)


def virtual_backend() -> tuple[str, dict[str, Any]]:
    """An ``anyio_backend`` value: trio on a mock clock that jumps whenever all tasks wait."""
    return ("trio", {"clock": MockClock(autojump_threshold=0)})


class LoopClock:
    """The project's Clock on the event loop's time (virtual under MockClock)."""

    def __init__(self, epoch: datetime = EPOCH) -> None:
        self.epoch = epoch

    def now(self) -> float:
        """The loop's monotonic seconds."""
        return anyio.current_time()

    def wall(self) -> datetime:
        """``epoch`` plus the loop's seconds."""
        return self.epoch + timedelta(seconds=anyio.current_time())

    async def sleep(self, seconds: float) -> None:
        """Sleep on the loop's clock."""
        await anyio.sleep(seconds)
