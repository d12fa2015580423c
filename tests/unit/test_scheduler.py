"""The per-source scheduler: one heap, a worker pool, the budget deciding the pace."""

from __future__ import annotations

import anyio
import pytest
import structlog
from virtual_time import LoopClock

from watcher.core.budget import BudgetPolicy
from watcher.core.events import WatchRef, WatchType
from watcher.core.schedule import SchedulePolicy, ScheduleState
from watcher.core.watch import WatchState
from watcher.daemon.runtime import Kind, WatchRuntime
from watcher.daemon.scheduler import SourceScheduler
from watcher.sources.gate import SourceGate, Ticket

pytestmark = pytest.mark.anyio

POLICY = SchedulePolicy(min_interval=1.0, max_interval=100.0)


def runtime(name: str, *, active: bool) -> WatchRuntime:
    interval = POLICY.min_interval if active else POLICY.max_interval
    return WatchRuntime(
        key=name,
        ref=WatchRef(WatchType.TRIGGER_RUN, name),
        kind=Kind.RUN,
        subject_id=name,
        policy=POLICY,
        state=WatchState(schedule=ScheduleState(interval=interval)),
    )


async def test_tight_budget_serves_active_watches_first_and_says_so() -> None:
    clock = LoopClock()
    gate = SourceGate("trigger", BudgetPolicy(rate=10.0, burst=1), max_concurrency=4, clock=clock)
    order: list[str] = []

    async def poll(rt: WatchRuntime, ticket: Ticket) -> None:
        await ticket.spend()
        order.append(rt.key)

    scheduler = SourceScheduler("trigger", gate, poll, workers=4, clock=clock, report_after=0.2)
    idle = [runtime(f"idle{i}", active=False) for i in range(6)]
    active = [runtime(f"active{i}", active=True) for i in range(3)]
    with structlog.testing.capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(scheduler.run)
            for rt in idle + active:  # the idle ones are due first
                scheduler.schedule(rt, 0.0)
            with anyio.fail_after(5):
                while len(order) < 9:  # noqa: ASYNC110 - observing a fake poller
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
    # All were due at once; the budget lets one through at a time, active ones first.
    assert order[:3] == ["active0", "active1", "active2"]
    assert sorted(order) == sorted(rt.key for rt in idle + active)
    starved = [e for e in logs if e["event"].startswith("request budget sets the pace")]
    assert starved
    assert starved[0]["waiting"] >= 1
    assert starved[0]["budget_per_minute"] == 600


async def test_rescheduling_replaces_the_earlier_timer_and_removed_watches_are_skipped() -> None:
    clock = LoopClock()
    gate = SourceGate("p", BudgetPolicy(rate=1000.0, burst=100), max_concurrency=2, clock=clock)
    polled: list[str] = []

    async def poll(rt: WatchRuntime, ticket: Ticket) -> None:
        polled.append(rt.key)

    scheduler = SourceScheduler("p", gate, poll, workers=2, clock=clock)
    a, b = runtime("a", active=True), runtime("b", active=True)
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        scheduler.schedule(a, 0.05)
        scheduler.schedule(a, 0.1)  # replaces the first timer
        scheduler.schedule(b, 0.05)
        b.removed = True
        await anyio.sleep(0.4)
        tg.cancel_scope.cancel()
    assert polled == ["a"]


async def test_workers_poll_each_watch_when_due_and_never_more_at_once_than_there_are() -> None:
    clock = LoopClock()
    gate = SourceGate("p", BudgetPolicy(rate=1000.0, burst=100), max_concurrency=3, clock=clock)
    started: dict[str, float] = {}
    running = peak = 0

    async def poll(rt: WatchRuntime, ticket: Ticket) -> None:
        nonlocal running, peak
        started[rt.key] = clock.now()
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.5)
        running -= 1

    scheduler = SourceScheduler("p", gate, poll, workers=3, clock=clock)
    due = {f"w{i}": 0.1 * i for i in range(10)} | {"late": 30.0}
    async with anyio.create_task_group() as tg:
        await tg.start(scheduler.run)
        start = clock.now()
        for key, delay in due.items():
            scheduler.schedule(runtime(key, active=True), delay)
        with anyio.fail_after(60):
            while len(started) < len(due):  # noqa: ASYNC110 - observing a fake poller
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert peak == 3
    for key, delay in due.items():
        assert started[key] - start >= delay - 1e-9, key
    # Three at a time, half a second each: ten watches in four rounds; the late one
    # wakes a parked worker at its time, not before and not much after.
    assert started["w9"] - start < 2.1
    assert 30.0 <= started["late"] - start < 30.1
