"""One source's polling: a single timer heap and a fixed pool of workers.

There is no sleeping task per watch. The loop pops due watches into a ready
queue ordered by priority (watches that changed recently first), takes a token
from the source's budget for each, and hands it to an idle worker. When the
budget cannot keep up, the backlog is served active-first and the log says the
budget, not the policy, sets the pace.
"""

from __future__ import annotations

import heapq
import itertools
import math
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
        send, receive = anyio.create_memory_object_stream[tuple[WatchRuntime, Ticket]](0)
        async with anyio.create_task_group() as tg, send:
            for _ in range(self._workers):
                tg.start_soon(self._worker, receive.clone())
            receive.close()
            task_status.started()
            while True:
                await self._dispatch(send)
                await self._sleep()

    def _move_due(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            due, seq, rt, gen = heapq.heappop(self._timers)
            if rt.removed or gen != rt.generation:
                continue
            heapq.heappush(self._ready, (0 if rt.active else 1, due, seq, rt, gen))

    async def _dispatch(
        self, send: anyio.abc.ObjectSendStream[tuple[WatchRuntime, Ticket]]
    ) -> None:
        self._move_due(self.clock.now())
        while self._ready:
            _, _, _, rt, gen = self._ready[0]
            if rt.removed or gen != rt.generation:
                heapq.heappop(self._ready)
                continue
            if not self.gate.try_take():
                self._note_starved()
                return
            heapq.heappop(self._ready)
            await send.send((rt, Ticket(self.gate, prepaid=1)))
            self._move_due(self.clock.now())
        self._note_caught_up()

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
        now = self.clock.now()
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

    async def _worker(
        self, receive: anyio.abc.ObjectReceiveStream[tuple[WatchRuntime, Ticket]]
    ) -> None:
        async with receive:
            async for rt, ticket in receive:
                self.busy += 1
                try:
                    await self._poll(rt, ticket)
                finally:
                    self.busy -= 1
