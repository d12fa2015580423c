"""Routing and per-notifier delivery with a fake notifier behind the Notifier port."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest
import structlog

from watcher.core.events import Event, EventKind, WatchRef, WatchType
from watcher.core.routing import Route
from watcher.core.statuses import Severity, Source
from watcher.notify.apprise_sender import DeliveryResult
from watcher.notify.dispatcher import DeliveryPolicy, Dispatcher, NotifierSlot
from watcher.notify.render import Message

pytestmark = pytest.mark.anyio


class FakeNotifier:
    def __init__(self, name: str, fail_first: int = 0, delay: float = 0.0) -> None:
        self.name = name
        self.fail_first = fail_first
        self.delay = delay
        self.messages: list[Message] = []
        self.attempts = 0

    async def send(self, message: Message) -> DeliveryResult:
        self.attempts += 1
        await anyio.sleep(self.delay)
        if self.fail_first > 0:
            self.fail_first -= 1
            return DeliveryResult(False, "FAILURE", "HTTP 500")
        self.messages.append(message)
        return DeliveryResult(True, "SUCCESS")


def event(i: int, severity: Severity = Severity.FAILURE, watch: str = "run_a") -> Event:
    return Event(
        f"evt_{i}",
        EventKind.RUN_STATUS_CHANGED,
        severity,
        Source.TRIGGER,
        WatchRef(WatchType.TRIGGER_RUN, watch),
        watch,
        "EXECUTING",
        "FAILED",
        datetime(2026, 1, 1, tzinfo=UTC),
    )


POLICY = DeliveryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02, queue_size=100)


async def run_events(dispatcher: Dispatcher, events: list[Event]) -> None:
    send, receive = anyio.create_memory_object_stream[Event](100)
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.run, receive)
        async with send:
            for e in events:
                await send.send(e)


async def test_routes_pick_notifiers_by_tag() -> None:
    oncall, audit = FakeNotifier("oncall"), FakeNotifier("audit")
    routes = [
        Route({"severity": frozenset({"failure"})}, ("oncall",), continue_=True),
        Route({}, ("audit",)),
    ]
    dispatcher = Dispatcher(
        routes,
        [NotifierSlot(oncall, frozenset({"oncall"})), NotifierSlot(audit, frozenset({"audit"}))],
        POLICY,
    )
    await run_events(
        dispatcher, [event(1, watch="run_a"), event(2, Severity.SUCCESS, watch="run_b")]
    )
    assert [m.title for m in oncall.messages] == ["[FAILED] run_a"]
    assert len(audit.messages) == 2


async def test_no_routes_means_every_notifier() -> None:
    a, b = FakeNotifier("a"), FakeNotifier("b")
    dispatcher = Dispatcher(
        None, [NotifierSlot(a, frozenset()), NotifierSlot(b, frozenset({"x"}))], POLICY
    )
    await run_events(dispatcher, [event(1)])
    assert len(a.messages) == len(b.messages) == 1


async def test_retries_until_success() -> None:
    flaky = FakeNotifier("flaky", fail_first=2)
    slot = NotifierSlot(flaky, frozenset({"x"}))
    await run_events(Dispatcher(None, [slot], POLICY), [event(1)])
    assert flaky.attempts == 3
    assert len(flaky.messages) == 1
    assert (slot.sent, slot.failed_attempts, slot.undeliverable) == (1, 2, 0)


async def test_undeliverable_after_the_cap_is_logged_with_event_ids() -> None:
    dead = FakeNotifier("dead", fail_first=100)
    slot = NotifierSlot(dead, frozenset({"x"}))
    with structlog.testing.capture_logs() as logs:
        await run_events(Dispatcher(None, [slot], POLICY), [event(7)])
    assert dead.attempts == 3
    assert slot.undeliverable == 1
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert errors[0]["event"] == "notification undeliverable after retries"
    assert errors[0]["event_ids"] == ["evt_7"]


async def test_a_slow_notifier_does_not_hold_back_another() -> None:
    slow, fast = FakeNotifier("slow", delay=2.0), FakeNotifier("fast")
    dispatcher = Dispatcher(
        None, [NotifierSlot(slow, frozenset()), NotifierSlot(fast, frozenset())], POLICY
    )
    send, receive = anyio.create_memory_object_stream[Event](100)
    async with send, anyio.create_task_group() as tg:
        tg.start_soon(dispatcher.run, receive)
        for i in range(3):
            await send.send(event(i, watch=f"run_{i}"))
        with anyio.fail_after(1.0):
            while len(fast.messages) < 3:  # noqa: ASYNC110 - a fake notifier has no event to wait on
                await anyio.sleep(0.01)
        assert slow.messages == []
        tg.cancel_scope.cancel()


async def test_full_queue_reports_instead_of_blocking() -> None:
    stuck = FakeNotifier("stuck", delay=10)
    slot = NotifierSlot(stuck, frozenset(), queue_size=2)
    dispatcher = Dispatcher(None, [slot], POLICY)
    with structlog.testing.capture_logs() as logs:
        for i in range(5):
            dispatcher.route(event(i))
    assert slot.dropped == 3
    slot.send_stream.close()
    slot.receive_stream.close()
    assert sum(1 for e in logs if e["event"] == "notifier queue full: event undeliverable") == 3


async def test_a_batch_of_one_watch_becomes_one_digest() -> None:
    sink = FakeNotifier("sink")
    slot = NotifierSlot(sink, frozenset())
    dispatcher = Dispatcher(None, [slot], POLICY)
    for i in range(4):
        dispatcher.route(event(i))
    slot.send_stream.close()
    async with anyio.create_task_group() as tg:
        tg.start_soon(dispatcher._worker, slot)
    slot.receive_stream.close()
    assert [m.title for m in sink.messages] == ["[FAILED] 4 runs changed in run_a"]
