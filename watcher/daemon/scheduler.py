"""One source's polling: a single timer heap and a fixed pool of workers.

There is no sleeping task per watch. Due watches move from the timer heap into a
ready queue ordered by priority (watches that changed recently first); a worker
takes a token from the source's budget for the first of them and polls it. A
worker that finishes a poll takes the next ready watch itself, so at full load no
poll waits for a hand-off; only when nothing is ready does it park, and the loop
wakes parked workers when a timer comes due or the budget refills. When the
budget cannot keep up, the backlog is served active-first and the log says the
budget, not the policy, sets the pace.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import structlog
from anyio.abc import TaskStatus

from watcher.clock import Clock
from watcher.daemon.runtime import WatchRuntime
from watcher.sources.gate import SourceGate, Ticket

__all__ = ["SourceScheduler"]

log = structlog.get_logger("watcher.scheduler")

PollFn = Callable[[WatchRuntime, Ticket], Awaitable[None]]

_STARVED_REPORT_AFTER = 5.0
_STARVED_REPORT_EVERY = 60.0


class SourceScheduler:
    """Timer heap + ready queue + workers for one upstream."""

    def __init__(
        self,
        name: str,
        gate: SourceGate,
        poll: PollFn,
        *,
        workers: int,
        clock: Clock,
        report_after: float = _STARVED_REPORT_AFTER,
    ) -> None:
        self.name = name
        self.gate = gate
        self.clock = clock
        self._poll = poll
        self._workers = workers
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, WatchRuntime, int]] = []
        self._ready: list[tuple[int, float, int, WatchRuntime, int]] = []
        self._wakeup = anyio.Event()
        self._parked: deque[anyio.Event] = deque()
        self._report_after = report_after
        self._starved_since: float | None = None
        self._starved_reported_at: float | None = None
        self.busy = 0

    def schedule(self, rt: WatchRuntime, delay: float) -> None:
        """Poll ``rt`` after ``delay`` seconds (replacing any earlier schedule)."""
        if rt.removed:
            return
        rt.generation += 1
        due = self.clock.now() + max(0.0, delay)
        heapq.heappush(self._timers, (due, next(self._seq), rt, rt.generation))
        if self._timers[0][2] is rt:
            self._wakeup.set()

    def pending(self) -> int:
        """Watches scheduled or waiting for a worker or the budget."""
        return len(self._timers) + len(self._ready)

    def backlog(self) -> int:
        """Due polls waiting for a worker or the budget."""
        return len(self._ready)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the loop and the workers until cancelled."""
        async with anyio.create_task_group() as tg:
            for _ in range(self._workers):
                tg.start_soon(self._worker)
            task_status.started()
            while True:
                self._move_due(self.clock.now())
                if self._parked and self._ready and self.gate.wait_time() <= 0:
                    for _ in range(min(len(self._parked), len(self._ready))):
                        self._parked.popleft().set()
                await self._sleep()

    def _move_due(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            due, seq, rt, gen = heapq.heappop(self._timers)
            if rt.removed or gen != rt.generation:
                continue
            heapq.heappush(self._ready, (0 if rt.active else 1, due, seq, rt, gen))

    def _take(self) -> WatchRuntime | None:
        """The first ready watch, with a token from the budget; None when no watch is
        ready or the budget has no token now."""
        self._move_due(self.clock.now())
        while self._ready:
            _, _, _, rt, gen = self._ready[0]
            if rt.removed or gen != rt.generation:
                heapq.heappop(self._ready)
                continue
            if not self.gate.try_take():
                self._note_starved()
                return None
            heapq.heappop(self._ready)
            return rt
        self._note_caught_up()
        return None

    def _note_starved(self) -> None:
        now = self.clock.now()
        if self._starved_since is None:
            self._starved_since = now
            return
        waited = now - self._starved_since
        last = self._starved_reported_at
        if waited >= self._report_after and (last is None or now - last >= _STARVED_REPORT_EVERY):
            self._starved_reported_at = now
            active = sum(1 for item in self._ready if item[0] == 0)
            log.warning(
                "request budget sets the pace: polls wait for budget, active watches first",
                source=self.name,
                waiting=len(self._ready),
                waiting_active=active,
                budget_per_minute=round(self.gate.policy.rate * 60),
            )

    def _note_caught_up(self) -> None:
        if self._starved_reported_at is not None:
            log.info("request budget no longer limits polling", source=self.name)
        self._starved_since = None
        self._starved_reported_at = None

    async def _sleep(self) -> None:
        """Until a timer comes due, the budget refills for a waiting watch, or a worker
        parks; with no worker parked, only the last matters."""
        now = self.clock.now()
        wake = math.inf
        if self._parked:
            wake = self._timers[0][0] if self._timers else math.inf
            if self._ready:
                wake = min(wake, now + max(self.gate.wait_time(), 0.001))
        timeout = wake - now
        if timeout <= 0:
            await anyio.lowlevel.checkpoint()
            return
        self._wakeup = anyio.Event()
        with anyio.move_on_after(min(timeout, 3600.0)):
            await self._wakeup.wait()

    async def _worker(self) -> None:
        while True:
            rt = self._take()
            if rt is None:
                parked = anyio.Event()
                self._parked.append(parked)
                if len(self._parked) == 1:
                    self._wakeup.set()  # the loop waited for a worker; now it has one
                await parked.wait()
                continue
            self.busy += 1
            try:
                await self._poll(rt, Ticket(self.gate, prepaid=1))
            finally:
                self.busy -= 1
