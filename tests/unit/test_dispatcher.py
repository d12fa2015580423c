"""Routing, grouping, rate limits, retries, reminders: the pipeline with fake notifiers.

Events go through the daemon's one publish path (the outbox, here without a state
file) on virtual time: a 10 s grouping window costs no real time. The fake notifiers
stand behind the Notifier port; the end-to-end tests use real receivers (HTTP and
SMTP) instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

import anyio
import pytest
import structlog
from virtual_time import LoopClock

from watcher.config.loader import parse_config
from watcher.config.notifications import build_routes
from watcher.core.budget import BudgetPolicy
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.routing import RouteNode, RouteSettings
from watcher.core.silences import Silence
from watcher.core.statuses import Severity, Source
from watcher.daemon.durability import Durability
from watcher.daemon.outbox import Outbox
from watcher.notify.apprise_sender import DeliveryResult
from watcher.notify.channel import DeliveryPolicy, NotifierChannel, Unlogged
from watcher.notify.render import Message
from watcher.notify.templates import MessageRenderer

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 22, 10, tzinfo=UTC)
FAST = DeliveryPolicy(
    max_attempts=3, retry_for=5.0, initial_backoff=0.01, max_backoff=0.02, queue_size=50_000
)
OPEN = BudgetPolicy(rate=10_000, burst=10_000)
CLOCK = LoopClock(T0)


class FakeNotifier:
    """Records messages; can fail its first N sends or be slow."""

    def __init__(self, name: str, fail_first: int = 0, delay: float = 0.0) -> None:
        self.name = name
        self.fail_first = fail_first
        self.delay = delay
        self.messages: list[Message] = []
        self.attempts = 0
        self.changed = anyio.Event()

    async def send(self, message: Message) -> DeliveryResult:
        self.attempts += 1
        await anyio.sleep(self.delay)
        if self.fail_first > 0:
            self.fail_first -= 1
            return DeliveryResult(False, "FAILURE", "HTTP 500")
        self.messages.append(message)
        self.changed.set()
        self.changed = anyio.Event()
        return DeliveryResult(True, "SUCCESS")

    async def wait_for(self, count: int) -> None:
        while len(self.messages) < count:
            await self.changed.wait()


class Pending:
    """A channel's settings, built once the outbox it reports to exists."""

    def __init__(
        self,
        notifier: FakeNotifier,
        tags: Sequence[str] = (),
        fmt: Literal["text", "json"] = "text",
        rate: BudgetPolicy = OPEN,
        policy: DeliveryPolicy = FAST,
    ) -> None:
        self.args = (notifier, frozenset(tags), MessageRenderer(fmt=fmt), rate, policy)


def channel(
    notifier: FakeNotifier,
    tags: Sequence[str] = (),
    fmt: Literal["text", "json"] = "text",
    rate: BudgetPolicy = OPEN,
    policy: DeliveryPolicy = FAST,
) -> Pending:
    return Pending(notifier, tags, fmt, rate, policy)


def outbox(
    tree: Sequence[RouteNode], pending: Sequence[Pending], silences: Sequence[Silence] = ()
) -> tuple[Outbox, list[NotifierChannel]]:
    """The daemon's publish path without a state file, its channels reporting to it."""
    box = Outbox(Durability(None, CLOCK), CLOCK, routes=tree, silences=silences)
    channels = [NotifierChannel(*p.args, CLOCK, box) for p in pending]
    box.dispatcher.configure(tree, silences, channels)
    return box, channels


def event(
    i: int,
    severity: Severity = Severity.FAILURE,
    watch: str = "run_a",
    kind: EventKind = EventKind.RUN_STATUS_CHANGED,
    to: str = "FAILED",
) -> Event:
    return Event(
        f"evt_{watch}_{i}",
        kind,
        severity,
        Source.TRIGGER,
        WatchRef(WatchType.TRIGGER_RUN, watch, watch, freeze({"team": "data"})),
        f"{watch}_sub{i}",
        "EXECUTING",
        to,
        T0,
    )


def routes(yaml: str = "", **defaults: object) -> tuple[RouteNode, ...]:
    notifiers = "notifiers: [{url: json://a, tags: [oncall]}, {url: json://b, tags: [audit]}, {url: json://c, tags: [email]}]\n"
    notifications = "notifications: {group_wait: 0s, group_interval: 0s}\n" if not defaults else ""
    config = parse_config(notifiers + notifications + yaml)
    return build_routes(config.routes, config.notifications)


async def run(box: Outbox, events: Sequence[Event], settle: float = 0.2) -> None:
    """Publish ``events`` one by one, let ``settle`` seconds of virtual time pass, drain."""
    async with anyio.create_task_group() as tg:
        await tg.start(box.dispatcher.run)
        for e in events:
            await box.publish([e])
            await anyio.lowlevel.checkpoint()
        await anyio.sleep(settle)
        box.dispatcher.close()


async def remind(box: Outbox, now: datetime) -> int:
    """Commit the reminders due at ``now``; how many events that made."""
    plan = box.dispatcher.plan_reminders(now)
    await box.commit(plan)
    return len({d.event.event_id for d in plan.deliveries})


async def test_routes_pick_notifiers_and_each_gets_an_event_once() -> None:
    oncall, audit = FakeNotifier("oncall"), FakeNotifier("audit")
    tree = routes(
        """
routes:
  - {match: {severity: failure}, notify: [oncall], continue: true}
  - {match: {severity: failure}, notify: [oncall, audit], continue: true}
  - {match: {}, notify: [audit]}
"""
    )
    box, _ = outbox(tree, [channel(oncall, ["oncall"]), channel(audit, ["audit"])])
    await run(box, [event(1, watch="run_a"), event(2, Severity.SUCCESS, watch="run_b")])
    assert [m.title for m in oncall.messages] == ["[FAILED] run_a run_a_sub1"]
    assert sorted(m.title for m in audit.messages) == [
        "[FAILED] run_a run_a_sub1",
        "[FAILED] run_b run_b_sub2",
    ]


async def test_a_storm_becomes_a_handful_of_messages_and_loses_nothing() -> None:
    text, machine = FakeNotifier("text"), FakeNotifier("json")
    tree = routes(defaults=True)  # default grouping: group_wait 1s, group_interval 10s
    json_policy = DeliveryPolicy(json_max_bytes=1024 * 1024)
    box, _ = outbox(tree, [channel(text), channel(machine, fmt="json", policy=json_policy)])
    storm = [event(i, kind=EventKind.GROUP_RUNS_FAILED, to="failed") for i in range(10_000)]
    await run(box, storm, settle=1.5)
    assert 1 <= len(text.messages) <= 3
    assert text.messages[0].title.startswith("[FAILED] ")
    assert sum(int(m.title.split()[1]) for m in text.messages) == 10_000
    assert 1 <= len(machine.messages) <= 8
    ids = [e["event_id"] for m in machine.messages for e in json.loads(m.body)["events"]]
    assert sorted(ids) == sorted(e.event_id for e in storm)
    assert json.loads(machine.messages[0].body)["digest"] is True


async def test_rate_limit_folds_the_excess_into_the_next_digest() -> None:
    sink = FakeNotifier("sink")
    box, (limited,) = outbox(
        routes(), [channel(sink, fmt="json", rate=BudgetPolicy(rate=1.0, burst=2))]
    )
    events = [event(i, watch=f"run_{i}") for i in range(30)]  # 30 different groups
    await run(box, events, settle=1.5)
    # The burst of two serves the first two groups as they come; a second later the
    # next token carries every other due group in one digest.
    assert len(sink.messages) == 3
    delivered = [
        e["event_id"]
        for m in sink.messages
        for e in (lambda b: b["events"] if "digest" in b else [b])(json.loads(m.body))
    ]
    assert sorted(delivered) == sorted(e.event_id for e in events)
    assert limited.folded == 27


async def test_retries_until_the_notifier_answers() -> None:
    flaky = FakeNotifier("flaky", fail_first=2)
    box, (ch,) = outbox(routes(), [channel(flaky)])
    await run(box, [event(1)])
    assert flaky.attempts == 3
    assert len(flaky.messages) == 1
    assert (ch.sent_events, ch.failed_attempts, ch.undeliverable) == (1, 2, 0)


async def test_undeliverable_is_logged_and_the_other_notifiers_hear_of_it() -> None:
    dead, email = FakeNotifier("slack", fail_first=1000), FakeNotifier("email")
    tree = routes(
        "routes: [{match: {severity: success}, notify: [email]}, {match: {}, notify: [oncall]}]\n"
    )
    box, (dead_channel, _) = outbox(tree, [channel(dead, ["oncall"]), channel(email, ["email"])])
    with structlog.testing.capture_logs() as logs:
        await run(box, [event(7), event(8)], settle=0.5)
    assert dead_channel.undeliverable == 2
    errors = [e for e in logs if e["event"] == "notification undeliverable after retries"]
    # One message or two (grouping may catch both): each event reported, once.
    assert sorted(i for e in errors for i in e["event_ids"]) == ["evt_run_a_7", "evt_run_a_8"]
    # One notifier.failed per outage, although the failure events were not routed to email.
    assert len(email.messages) == 1
    assert email.messages[0].title.startswith("[NOTIFIER FAILED] slack: ")
    assert "evt_run_a_7" in email.messages[0].body


async def test_a_slow_notifier_does_not_hold_back_another() -> None:
    slow, fast = FakeNotifier("slow", delay=5.0), FakeNotifier("fast")
    box, _ = outbox(routes(), [channel(slow), channel(fast)])
    async with anyio.create_task_group() as tg:
        await tg.start(box.dispatcher.run)
        for i in range(3):
            await box.publish([event(i, watch=f"run_{i}")])
        # Virtual time: the slow notifier's 5 s pass only if nothing else is runnable.
        with anyio.fail_after(1.0):
            await fast.wait_for(3)
        assert slow.messages == []
        tg.cancel_scope.cancel()


async def test_backlog_bound_refuses_and_reports() -> None:
    ch = NotifierChannel(
        FakeNotifier("stuck"),
        frozenset(),
        MessageRenderer(),
        OPEN,
        DeliveryPolicy(queue_size=2),
        CLOCK,
        Unlogged(),
    )
    node = RouteNode("r", settings=RouteSettings(group_wait=60))
    with structlog.testing.capture_logs() as logs:
        accepted = [ch.accept(event(i), node) for i in range(5)]
    assert accepted == [True, True, False, False, False]
    assert ch.dropped == 3
    assert sum(1 for e in logs if e["event"] == "notifier backlog full: event undeliverable") == 3


async def test_silenced_events_are_counted_not_sent() -> None:
    from watcher.core.routing import parse_matcher

    sink = FakeNotifier("sink")
    silence = Silence("quiet", {"watch.id": parse_matcher("run_quiet")})
    box, _ = outbox(routes(), [channel(sink)], silences=[silence])
    with structlog.testing.capture_logs() as logs:
        await run(box, [event(1, watch="run_quiet"), event(2, watch="run_loud")])
    assert [m.title for m in sink.messages] == ["[FAILED] run_loud run_loud_sub2"]
    assert box.dispatcher.silenced == 1
    assert any(e["event"] == "event silenced" and e["silence"] == "quiet" for e in logs)


def watch_error(minutes: int = 0) -> Event:
    watch = WatchRef(WatchType.TRIGGER_RUN, "run_x", "x")
    return Event(
        "evt_err",
        EventKind.WATCH_ERROR,
        Severity.WARNING,
        Source.TRIGGER,
        watch,
        "run_x",
        "ok",
        "unreachable",
        T0 + timedelta(minutes=minutes),
    )


def recovered(minutes: int) -> Event:
    watch = WatchRef(WatchType.TRIGGER_RUN, "run_x", "x")
    return Event(
        "evt_ok",
        EventKind.WATCH_RECOVERED,
        Severity.INFO,
        Source.TRIGGER,
        watch,
        "run_x",
        "unreachable",
        "ok",
        T0 + timedelta(minutes=minutes),
    )


async def test_reminders_follow_each_routes_repeat_interval() -> None:
    oncall, audit = FakeNotifier("oncall"), FakeNotifier("audit")
    tree = routes(
        """
routes:
  - {match: {severity: warning}, notify: [oncall], repeat_interval: 1h, continue: true}
  - {match: {}, notify: [audit], repeat_interval: 4h}
"""
    )
    box, channels = outbox(tree, [channel(oncall, ["oncall"]), channel(audit, ["audit"])])
    await box.publish([watch_error()])
    counts = []
    for minutes in (30, 61, 90, 125, 245):
        counts.append(await remind(box, T0 + timedelta(minutes=minutes)))
    # 61m: oncall; 125m: oncall; 245m: oncall and audit.
    assert counts == [0, 1, 0, 1, 2]
    queued = [e for ch in channels for b in ch.grouper.drain() for e in b.items]
    reminders = [e for e in queued if e.kind is EventKind.CONDITION_REMINDER]
    assert [e.details["reminder"] for e in reminders] == [1, 2, 3, 1]
    assert {e.cause.event_id for e in reminders if e.cause} == {"evt_err"}


async def test_resolved_goes_to_the_routes_that_opened_it_when_they_ask() -> None:
    oncall, audit = FakeNotifier("oncall"), FakeNotifier("audit")
    tree = routes(
        """
routes:
  - {match: {severity: warning}, notify: [oncall], send_resolved: true}
  - {match: {}, notify: [audit]}
"""
    )
    box, channels = outbox(tree, [channel(oncall, ["oncall"]), channel(audit, ["audit"])])
    await box.publish([watch_error(), recovered(12)])
    oncall_events = [e for b in channels[0].grouper.drain() for e in b.items]
    audit_events = [e for b in channels[1].grouper.drain() for e in b.items]
    # The recovery itself (info) goes where info goes; the resolved message to where the problem went.
    assert [e.kind for e in oncall_events] == [EventKind.WATCH_ERROR, EventKind.CONDITION_RESOLVED]
    assert [e.kind for e in audit_events] == [EventKind.WATCH_RECOVERED]
    assert oncall_events[1].details["duration_seconds"] == 720.0
    assert await remind(box, T0 + timedelta(days=1)) == 0


class ManualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - never awaited here
        self.t += seconds


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

channel_ops = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 5), st.sampled_from(list(Severity))),
        st.tuples(st.just("time"), st.floats(0, 15)),
        st.tuples(
            st.just("send"),
        ),
    ),
    max_size=150,
)


@settings(max_examples=200, deadline=None)
@given(channel_ops, st.floats(0, 3), st.floats(0, 20), st.floats(0.05, 5), st.integers(1, 5))
def test_channel_delivers_every_event_once_for_any_interleaving(
    ops: list[tuple[object, ...]], wait: float, interval: float, rate: float, burst: int
) -> None:
    """Grouping, escalation and rate-limit folding together: each event in exactly one message."""
    clock = ManualClock()
    ch = NotifierChannel(
        FakeNotifier("n"),
        frozenset(),
        MessageRenderer(fmt="json"),
        BudgetPolicy(rate, burst),
        FAST,
        clock,
        Unlogged(),
    )
    route = RouteNode("r", settings=RouteSettings(group_wait=wait, group_interval=interval))
    sent: list[str] = []
    made: list[str] = []
    for op in ops:
        match op:
            case ("event", watch, severity):
                e = event(len(made), severity=severity, watch=f"run_{watch}")  # type: ignore[arg-type]
                made.append(e.event_id)
                assert ch.accept(e, route)
            case ("time", dt):
                clock.t += float(dt)  # type: ignore[arg-type]
            case ("send",):
                while batches := ch._next_batches(clock.t):
                    for message, events in ch.messages(
                        [e for b in batches for e in b.items], batches[0].context
                    ):
                        body = json.loads(message.body)
                        ids = [
                            x["event_id"]
                            for x in (body["events"] if body.get("digest") else [body])
                        ]
                        assert ids == [e.event_id for e in events]
                        sent.extend(ids)
    ch.close()
    while batches := ch._next_batches(clock.t):
        sent.extend(e.event_id for b in batches for e in b.items)
    assert sorted(sent) == sorted(made)
