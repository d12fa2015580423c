"""Event loop lag: how late a timer fires, the daemon's own measure of being too busy.

A watcher whose loop stalls polls late and pings the systemd watchdog late; this
probe makes that visible on ``/metrics`` before it becomes a restart.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

__all__ = ["watch_loop_lag"]


async def watch_loop_lag(observe: Callable[[float], None], *, every: float = 0.1) -> None:
    """Sleep ``every`` seconds forever; report each wake-up's delay past its deadline."""
    while True:
        due = anyio.current_time() + every
        await anyio.sleep(every)
        observe(max(0.0, anyio.current_time() - due))
