"""What the realtime feed needs of the watcher, and what a row means for one watch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from watcher.config.model import WatchConfig
from watcher.core.pushed import RunRow, Verdict, moved, read_row
from watcher.core.snapshots import RunSnapshot
from watcher.core.watch import WatchState
from watcher.daemon.runtime import WatchRuntime
from watcher.sources.trigger import ListFilter, ListPass

__all__ = ["Lister", "RealtimeHost", "known_snapshot", "row_moved", "row_verdict"]


class RealtimeHost(Protocol):
    """What the feed needs of the watcher."""

    @property
    def registry(self) -> Mapping[str, WatchRuntime]:
        """Every runtime, by key."""
        ...

    @property
    def configs(self) -> Mapping[str, WatchConfig]:
        """The configs of the watches, by key."""
        ...

    @property
    def revision(self) -> int:
        """Changes whenever a watch is added, removed or reconfigured."""
        ...

    def poll_soon(self, rt: WatchRuntime) -> None:
        """Poll ``rt`` now."""
        ...

    def cover(self, rt: WatchRuntime, pushed: bool) -> None:
        """The feed holds ``rt`` (its polls stretch) or no longer does."""
        ...

    async def apply_pushed(self, rt: WatchRuntime, snapshot: RunSnapshot) -> None:
        """Apply what the feed showed of ``rt``'s run, as a poll's result would be."""
        ...

    def saw(self, rt: WatchRuntime) -> None:
        """A snapshot shows ``rt``'s run as its watch last saw it: it counts as seen."""
        ...

    def defer(self, rt: WatchRuntime, seconds: float) -> None:
        """Poll ``rt`` in ``seconds`` rather than now."""
        ...

    def confirm(self, rt: WatchRuntime, listed: RunSnapshot) -> None:
        """A cross-check found ``rt``'s run as its watch last saw it (``listed``): its own
        poll waits, and what the list adds (the version) is kept."""
        ...


Lister = Callable[[ListFilter, int], Awaitable[ListPass]]
"""Reads ``GET /api/v1/runs`` with a filter, up to a number of pages (the budget's)."""


def known_snapshot(rt: WatchRuntime) -> RunSnapshot | None:
    """The run as ``rt``'s watch last saw it (None before its first poll)."""
    state = rt.state
    known = state.snapshot if isinstance(state, WatchState) else None
    return known if isinstance(known, RunSnapshot) else None


def row_verdict(
    rt: WatchRuntime, run: RunRow, trail: Sequence[object], environment: str | None = None
) -> Verdict:
    """What a row means for ``rt``'s watch (``core/pushed.py``); an empty ``trail`` for
    a snapshot row."""
    state = rt.state
    return read_row(
        known_snapshot(rt),
        run,
        trail=trail,
        healthy=isinstance(state, WatchState) and state.health.healthy,
        environment=environment,
    )


def row_moved(rt: WatchRuntime, run: RunRow) -> bool:
    """Whether a row shows a change ``rt``'s watch has not seen (``core/pushed.py``)."""
    return moved(known_snapshot(rt), run)
