"""One notifier, many messages: a failing or hung message holds back only its own group.

Virtual time (trio's MockClock through anyio): a 30 s hang or a 15-minute retry
budget costs nothing, and "promptly" is measured in virtual seconds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio
import pytest
from virtual_time import LoopClock

from watcher.core.budget import BudgetPolicy
from watcher.core.events import Event, EventKind, WatchRef, WatchType
from watcher.core.redelivery import RetryPolicy, next_attempt
from watcher.core.routing import RouteNode, RouteSettings
from watcher.core.statuses import Severity, Source
from watcher.notify.apprise_sender import DeliveryResult
from watcher.notify.channel import DeliveryPolicy, NotifierChannel
from watcher.notify.render import Message
from watcher.notify.templates import MessageRenderer

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 12, 7, 9, tzinfo=UTC)
ROUTE = RouteNode("r", settings=RouteSettings(group_wait=0.0, group_interval=0.0))
POLICY = DeliveryPolicy(max_attempts=50, retry_for=900.0, initial_backoff=1.0, max_backoff=30.0)


def event(
    watch: str, n: int, to: str = "FAILED", kind: EventKind = EventKind.RUN_STATUS_CHANGED
) -> Event:
    return Event(
        f"evt_{watch}_{n}",
        kind,
        Severity.FAILURE,
        Source.TRIGGER,
        WatchRef(WatchType.TRIGGER_RUN, watch, watch),
        watch,
        "EXECUTING",
        to,
        T0,
    )


class Selective:
    """A service that refuses (``refuse``) or hangs on (``hang``) the messages naming a
    watch, and takes the rest; it records when each message arrived."""

    name = "selective"

    def __init__(self, refuse: str = "", hang: str = "", hang_for: float = 30.0) -> None:
        self.refuse, self.hang, self.hang_for = refuse, hang, hang_for
        self.delivered: list[tuple[float, str]] = []
        self.attempts: list[str] = []

    async def send(self, message: Message) -> DeliveryResult:
        self.attempts.append(message.title)
        if self.hang and self.hang in message.title:
            await anyio.sleep(self.hang_for)
            return DeliveryResult(False, "TIMEOUT", f"no answer within {self.hang_for:g}s")
        if self.refuse and self.refuse in message.title:
            return DeliveryResult(False, "FAILURE", "HTTP 413: payload too large")
        self.delivered.append((anyio.current_time(), message.title))
        return DeliveryResult(True, "SUCCESS")


class Log:
    """The delivery log: what was sent and given up, by event id."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.given_up: list[tuple[str, str]] = []

    async def delivered(self, channel: NotifierChannel, events: Sequence[Event]) -> None:
        self.sent += [e.event_id for e in events]

    async def undeliverable(
        self, channel: NotifierChannel, events: Sequence[Event], d: str
    ) -> None:
        self.given_up += [(e.event_id, d) for e in events]


def make(
    notifier: Selective, log: Log, policy: DeliveryPolicy = POLICY, rate: float = 100.0
) -> NotifierChannel:
    return NotifierChannel(
        notifier,
        frozenset(),
        MessageRenderer(),
        BudgetPolicy(rate=rate, burst=max(1.0, rate)),
        policy,
        LoopClock(T0),
        log,
        rng=random.Random(7),
    )


async def test_a_refused_message_is_retried_alone_while_the_others_go_out() -> None:
    service, log = Selective(refuse="run_poison"), Log()
    ch = make(service, log)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ch.run)
        start = anyio.current_time()
        ch.accept(event("run_poison", 1), ROUTE)
        for i in range(3):
            ch.accept(event(f"run_ok{i}", 1), ROUTE)
        with anyio.fail_after(1.0):  # virtual seconds: the poison's retries take minutes
            while len(log.sent) < 3:  # noqa: ASYNC110 - observing the channel's log
                await anyio.sleep(0.01)
        assert sorted(log.sent) == ["evt_run_ok0_1", "evt_run_ok1_1", "evt_run_ok2_1"]
        assert all(at - start < 0.5 for at, _ in service.delivered)
        # The poison is still owed (retrying), not lost and not sent.
        assert ch.leftovers() == ["evt_run_poison_1"]
        tg.cancel_scope.cancel()


async def test_a_hung_send_does_not_delay_the_rest() -> None:
    service, log = Selective(hang="run_slow", hang_for=30.0), Log()
    ch = make(service, log)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ch.run)
        ch.accept(event("run_slow", 1), ROUTE)
        await anyio.sleep(0.1)  # the hung send has started
        ch.accept(event("run_fast", 1), ROUTE)
        with anyio.fail_after(1.0):
            while not log.sent:  # noqa: ASYNC110 - observing the channel's log
                await anyio.sleep(0.01)
        assert log.sent == ["evt_run_fast_1"]
        assert ch.leftovers() == ["evt_run_slow_1"]  # in flight: still listed
        tg.cancel_scope.cancel()


async def test_one_groups_later_events_wait_for_its_retried_message_and_keep_order() -> None:
    class FlakyFirst(Selective):
        """Refuses the first two attempts at anything, then takes everything."""

        def __init__(self) -> None:
            super().__init__()
            self.refusals = 2

        async def send(self, message: Message) -> DeliveryResult:
            if self.refusals:
                self.refusals -= 1
                self.attempts.append(message.title)
                return DeliveryResult(False, "FAILURE", "HTTP 503")
            return await super().send(message)

    service, log = FlakyFirst(), Log()
    ch = make(service, log)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ch.run)
        ch.accept(event("run_a", 1, to="EXECUTING"), ROUTE)
        await anyio.sleep(0.01)  # the first attempt failed; run_a's group is held
        ch.accept(event("run_a", 2, to="FAILED"), ROUTE)
        ch.accept(event("run_a", 3, to="CRASHED"), ROUTE)
        with anyio.fail_after(120):
            while len(log.sent) < 3:  # noqa: ASYNC110 - observing the channel's log
                await anyio.sleep(0.05)
        # In order: the retried message first, then the two that waited, as one digest.
        assert log.sent == ["evt_run_a_1", "evt_run_a_2", "evt_run_a_3"]
        assert len(service.delivered) == 2
        tg.cancel_scope.cancel()


async def test_a_watchs_messages_keep_order_across_kinds_while_others_pass() -> None:
    """Different kinds are different groups (``group_by: [watch, kind]``), yet one
    watch's messages leave in order; another watch is not held back."""

    class RefuseTwice(Selective):
        def __init__(self) -> None:
            super().__init__()
            self.refusals = 2

        async def send(self, message: Message) -> DeliveryResult:
            if "stuck" in message.title and self.refusals:
                self.refusals -= 1
                return DeliveryResult(False, "FAILURE", "HTTP 503")
            return await super().send(message)

    service, log = RefuseTwice(), Log()
    ch = make(service, log)
    grouped = RouteNode(
        "g",
        settings=RouteSettings(group_by=("watch", "kind"), group_wait=0.0, group_interval=0.0),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(ch.run)
        ch.accept(event("run_a", 1, to="stuck", kind=EventKind.RUN_STUCK), grouped)
        await anyio.sleep(0.01)
        ch.accept(event("run_a", 2, to="COMPLETED"), grouped)
        ch.accept(event("run_b", 1), grouped)
        with anyio.fail_after(120):
            while len(log.sent) < 3:  # noqa: ASYNC110 - observing the channel's log
                await anyio.sleep(0.05)
        assert log.sent.index("evt_run_a_1") < log.sent.index("evt_run_a_2")
        assert log.sent[0] == "evt_run_b_1"  # not held back by run_a's retries
        tg.cancel_scope.cancel()


async def test_a_message_that_keeps_failing_is_given_up_with_the_notifiers_reason() -> None:
    policy = DeliveryPolicy(max_attempts=4, retry_for=900.0, initial_backoff=1.0, max_backoff=2.0)
    service, log = Selective(refuse="run_poison"), Log()
    ch = make(service, log, policy)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ch.run)
        ch.accept(event("run_poison", 1), ROUTE)
        ch.accept(event("run_ok", 1), ROUTE)
        with anyio.fail_after(60):
            while not log.given_up:  # noqa: ASYNC110 - observing the channel's log
                await anyio.sleep(0.05)
        assert log.given_up == [("evt_run_poison_1", "HTTP 413: payload too large")]
        assert log.sent == ["evt_run_ok_1"]
        assert len([t for t in service.attempts if "run_poison" in t]) == 4
        assert ch.leftovers() == []
        tg.cancel_scope.cancel()


async def test_retries_obey_the_notifiers_rate_limit() -> None:
    """A notifier that is down gets no more attempts than its rate limit allows."""
    service, log = Selective(refuse="FAILURE"), Log()
    ch = make(service, log, rate=0.5)  # one request every two seconds
    async with anyio.create_task_group() as tg:
        tg.start_soon(ch.run)
        for i in range(20):
            ch.accept(event(f"run_{i}", 1), ROUTE)
        await anyio.sleep(60)
        # 60 s at 0.5/s, plus the one stored token.
        assert len(service.attempts) <= 60 * 0.5 + 2
        assert sorted(ch.leftovers()) == sorted(f"evt_run_{i}_1" for i in range(20))
        tg.cancel_scope.cancel()


async def test_cancelled_mid_send_the_event_is_still_listed() -> None:
    """The shutdown deadline cancels the channel while a send is in flight."""
    service, log = Selective(hang="FAILURE"), Log()  # every title starts [FAILURE]
    ch = make(service, log)
    with anyio.move_on_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ch.run)
            ch.accept(event("run_a", 1), ROUTE)
            ch.accept(event("run_b", 1), ROUTE)
            ch.close()
    assert sorted(ch.leftovers()) == ["evt_run_a_1", "evt_run_b_1"]
    assert log.sent == []
    assert log.given_up == []


def test_backoff_grows_is_capped_and_stops_at_either_limit() -> None:
    policy = RetryPolicy(max_attempts=6, retry_for=100.0, initial_backoff=1.0, max_backoff=8.0)
    rng = random.Random(1)
    delays = [next_attempt(policy, n, 0.0, 10.0, rng) for n in range(1, 6)]
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0]
    for at, ceiling in zip(delays, ceilings, strict=True):
        assert at is not None
        assert ceiling / 10 <= at - 10.0 <= ceiling
    assert next_attempt(policy, 6, 0.0, 10.0, rng) is None  # attempts spent
    assert next_attempt(policy, 2, 0.0, 100.0, rng) is None  # time spent
    last = next_attempt(policy, 5, 0.0, 99.5, rng)
    assert last is not None
    assert last <= 100.0  # never past the time cap
