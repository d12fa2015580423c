"""The watcher as the realtime feed's host (``daemon/realtime_host.py``): what a row, a
snapshot, a cross-check or a takeover does to a watch. :class:`~watcher.daemon.watcher.
Watcher` polls; this layer under it holds what the feed asks of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from watcher.core.snapshots import RunSnapshot
from watcher.core.watch import Step, StepContext, WatchState, step_run
from watcher.daemon.registry import WatchRegistry
from watcher.daemon.runtime import WatchRuntime

__all__ = ["BACKSTOP", "FeedHost"]

BACKSTOP = 1.5
"""A covered run's own poll, in ``realtime_cross_check``s: the feed's batched cross-check
comes first and pushes it back."""


class FeedHost(WatchRegistry):
    """What the realtime feed asks of the watcher."""

    def _context(self, rt: WatchRuntime) -> StepContext:
        raise NotImplementedError

    def _fetched(self, rt: WatchRuntime) -> None:
        raise NotImplementedError

    async def _apply(self, rt: WatchRuntime, step: Step) -> None:
        raise NotImplementedError

    def _schedule(
        self, rt: WatchRuntime, delay: float | None, check_in: float | None = None
    ) -> None:
        raise NotImplementedError

    def poll_soon(self, rt: WatchRuntime) -> None:
        """Poll ``rt`` now (a stream ended: polling takes over)."""
        if not rt.removed:
            self.schedulers[rt.source].schedule(rt, 0.0)

    def cover(self, rt: WatchRuntime, pushed: bool) -> None:
        """The realtime feed holds ``rt`` now (its polls stretch to the cross-check) or no
        longer does (polled at once, then at its own pace)."""
        if rt.removed or rt.pushed == pushed:
            return
        rt.pushed = pushed
        if pushed:
            self._schedule(rt, 0.0)  # stretched to the backstop
        else:
            self.poll_soon(rt)

    def confirm(self, rt: WatchRuntime, listed: RunSnapshot) -> None:
        """The feed's cross-check found ``rt``'s run as its watch last saw it: the run's own
        poll waits for a backstop again. A version the watch lacked (a baseline from a
        row) is taken from the list."""
        if rt.pushed and not rt.removed:
            self._schedule(rt, 0.0)
        state = rt.state
        if not isinstance(state, WatchState):
            return
        known = state.snapshot
        if isinstance(known, RunSnapshot) and known.version is None and listed.version:
            rt.state = replace(
                state,
                snapshot=replace(
                    known,
                    version=listed.version,
                    environment=known.environment or listed.environment,
                ),
            )

    async def apply_pushed(self, rt: WatchRuntime, snapshot: RunSnapshot) -> None:
        """Apply a run as the realtime feed showed it, as a poll's result would be."""
        if rt.removed or rt.finished_at is not None:
            return
        state = rt.state
        assert isinstance(state, WatchState)
        self._fetched(rt)
        await self._apply(rt, step_run(state, snapshot, self._context(rt)))

    def wake(self, keys: Iterable[str]) -> None:
        """Watches taken over from another replica: the realtime feed judges those it
        holds against their rows; the rest are polled now."""
        keys = [key for key in keys if key in self.dormant]
        feed = self.realtime
        rest = feed.take_over(keys) if feed is not None else keys
        for key in set(keys) - set(rest):
            self.dormant.discard(key)
            if (rt := self.registry.get(key)) is not None:
                self._schedule(rt, 0.0)  # the backstop: the feed reports its changes
        super().wake(rest)

    def pending_note(self) -> str:
        """What the first pass still waits for, in words (``/readyz``)."""
        feed = self.realtime
        waiting = f", {feed.awaiting} for the realtime snapshot" if feed and feed.awaiting else ""
        return f"{self.unpolled} pending{waiting}"

    def saw(self, rt: WatchRuntime) -> None:
        """The feed's snapshot shows ``rt``'s run as its watch last saw it (a restored
        state): it counts as seen, as a poll that found nothing new would."""
        if not rt.removed:
            rt.restored = False
            self._fetched(rt)
            self._seen(rt)

    def defer(self, rt: WatchRuntime, seconds: float) -> None:
        """Poll ``rt`` in ``seconds`` rather than now (the feed's snapshot may see it first)."""
        if not rt.removed:
            self.schedulers[rt.source].schedule(rt, seconds)
