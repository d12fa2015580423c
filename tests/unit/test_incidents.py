"""Incidents: ids, the engaged notifiers, acknowledgement, escalation tiers, flapping.

The dispatcher's plans are read directly (what would be sent, to whom): the
lifecycle is pure planning over data, with the time passed in.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from virtual_time import LoopClock

from watcher.config.loader import parse_config
from watcher.config.notifications import build_routes
from watcher.core.budget import BudgetPolicy
from watcher.core.conditions import ConditionBook, reminder_event
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.flapping import FlapPolicy
from watcher.core.incidents import IncidentError, incident_id, incident_view
from watcher.core.redelivery import RetryPolicy, next_attempt
from watcher.core.routing import parse_matcher
from watcher.core.silences import Silence
from watcher.core.statuses import Severity, Source
from watcher.notify.apprise_sender import DeliveryResult
from watcher.notify.channel import DeliveryPolicy, NotifierChannel, Unlogged
from watcher.notify.dispatcher import Dispatcher, Plan
from watcher.notify.incident_plans import Sink
from watcher.notify.pagerduty import pagerduty_event
from watcher.notify.render import Message
from watcher.notify.serialize import condition_from_dict, condition_to_dict
from watcher.notify.slack_blocks import incident_blocks, opened_facts, state_line
from watcher.notify.templates import MessageRenderer
from watcher.simulator.pagerduty import validate_event
from watcher.simulator.slack import check_blocks

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 22, 10, tzinfo=UTC)
CLOCK = LoopClock(T0)
GROUP = WatchRef(WatchType.PARALLEL_TASK_GROUP, "tgrp_1", "nightly", freeze({"team": "data"}))


class Sender:
    """A notifier that is never run: these tests read plans."""

    def __init__(self, name: str, incidents: bool = False) -> None:
        self.name = name
        self.incidents = incidents

    async def send(self, message: Message) -> DeliveryResult:  # pragma: no cover
        return DeliveryResult(True, "SUCCESS")


def chan(name: str, tags: Sequence[str], incidents: bool = False) -> NotifierChannel:
    return NotifierChannel(
        Sender(name, incidents),
        frozenset(tags),
        MessageRenderer(),
        BudgetPolicy(1000, 1000),
        DeliveryPolicy(),
        CLOCK,
        Unlogged(),
    )


async def _nowhere(plan: Plan) -> None:  # pragma: no cover - plans are read, not sunk
    return None


DEFAULT_FLAPS = FlapPolicy()


def desk(yaml: str, flaps: FlapPolicy | None = DEFAULT_FLAPS, sink: Sink = _nowhere) -> Dispatcher:
    config = parse_config(
        """
notifiers:
  - {url: json://chat, name: chat, tags: [chat]}
  - {url: json://pager, name: pager, tags: [page]}
  - {url: json://boss, name: boss, tags: [boss]}
"""
        + yaml
    )
    dispatcher = Dispatcher(
        build_routes(config.routes, config.notifications), CLOCK, sink=sink, flaps=flaps
    )
    channels = [chan("chat", ["chat"]), chan("pager", ["page"], True), chan("boss", ["boss"])]
    dispatcher.configure(dispatcher.routes, (), channels)
    return dispatcher


def failed(run: str, minutes: float = 0, n: int = 0) -> Event:
    return Event(
        f"evt_fail_{run}_{n}",
        EventKind.GROUP_RUNS_FAILED,
        Severity.FAILURE,
        Source.PARALLEL,
        GROUP,
        run,
        "running",
        "failed",
        T0 + timedelta(minutes=minutes),
        freeze({"group_id": "tgrp_1", "error": "boom"}),
    )


def finished(minutes: float, n: int = 0) -> Event:
    return Event(
        f"evt_done_{n}",
        EventKind.GROUP_FINISHED,
        Severity.FAILURE,
        Source.PARALLEL,
        GROUP,
        "tgrp_1",
        "active",
        "inactive",
        T0 + timedelta(minutes=minutes),
        freeze({"counts": {"completed": 9, "failed": 1}}),
    )


def sent(plan: Plan) -> list[tuple[str, str]]:
    """(kind, notifier) of every delivery."""
    return [(d.event.kind.value, d.channel.name) for d in plan.deliveries]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


ROUTES = """
routes:
  - match: {severity: failure}
    notify: [chat, page]
    escalate:
      - {after: 10m, notifiers: [boss]}
      - {after: 30m, notifiers: [pager, boss]}
"""


async def test_a_failing_group_is_one_incident_that_its_end_resolves_where_it_was_opened() -> None:
    d = desk(ROUTES)
    opening = d.plan([failed("run_1")])
    assert sent(opening) == [("group.runs_failed", "chat"), ("group.runs_failed", "pager")]
    (condition,) = d.conditions.open.values()
    ident = incident_id(condition)
    assert opening.deliveries[0].event.incident is not None
    assert opening.deliveries[0].event.incident["id"] == ident
    assert opening.deliveries[0].event.incident["state"] == "open"
    assert condition.engaged == ("chat", "pager")
    # A second failure feeds the same incident.
    d.plan([failed("run_2", 1, 1)])
    assert [incident_id(c) for c in d.conditions.open.values()] == [ident]
    ended = d.plan([finished(14)])
    # group.finished goes where routes send it; the pager (which keeps incidents) hears
    # the incident's end although the route has no send_resolved.
    assert sent(ended) == [
        ("group.finished", "chat"),
        ("group.finished", "pager"),
        ("condition.resolved", "pager"),
    ]
    resolved = ended.deliveries[-1].event
    assert resolved.incident is not None
    assert (resolved.incident["id"], resolved.incident["state"]) == (ident, "resolved")
    assert resolved.incident["duration_seconds"] == 840.0
    assert ended.deliveries[0].event.incident is not None
    assert ended.deliveries[0].event.incident["state"] == "resolved"
    assert d.conditions.open == {}
    assert [v["id"] for v in d.incidents()] == [ident]
    assert d.incidents(open_only=True) == []


def test_incident_ids_are_the_same_everywhere_and_new_for_a_reopening() -> None:
    first, second = ConditionBook(), ConditionBook()
    for book in (first, second):
        book.observe(failed("run_1"))
    (a,) = first.open.values()
    (b,) = second.open.values()
    assert incident_id(a) == incident_id(b)
    first.observe(finished(5))
    first.observe(failed("run_9", 6, 9))
    (again,) = first.open.values()
    assert again.key == a.key
    assert incident_id(again) != incident_id(a)


async def test_escalation_sends_each_tier_once_at_its_time_and_not_after_an_ack() -> None:
    d = desk(ROUTES)
    d.plan([failed("run_1")])
    assert sent(d.plan_reminders(at(9.9))) == []
    tier1 = d.plan_reminders(at(10))
    # The tier's notifier, and the pager already engaged (its page shows the escalation).
    assert sorted(sent(tier1)) == [("incident.escalated", "boss"), ("incident.escalated", "pager")]
    assert tier1.deliveries[0].event.details["tier"] == 1
    assert sent(d.plan_reminders(at(11))) == []
    (condition,) = d.conditions.open.values()
    plan, acked = d.plan_ack(incident_id(condition)[:8], "ana", "on it", at(20))
    assert acked.ack is not None
    assert acked.ack.by == "ana"
    # Everyone engaged hears it: the opening's notifiers and the tier reached.
    assert sorted(sent(plan)) == [
        ("incident.acknowledged", "boss"),
        ("incident.acknowledged", "chat"),
        ("incident.acknowledged", "pager"),
    ]
    assert plan.conditions[condition.key] is not None
    assert sent(d.plan_reminders(at(31))) == []  # acknowledged: tier 2 does not fire
    plan, _ = d.plan_unack(incident_id(condition), at(40))
    assert {k for k, _ in sent(plan)} == {"incident.unacknowledged"}
    tier2 = d.plan_reminders(at(40))
    assert sorted(sent(tier2)) == [("incident.escalated", "boss"), ("incident.escalated", "pager")]
    assert tier2.deliveries[0].event.details["tier"] == 2
    assert sent(d.plan_reminders(at(90))) == []


async def test_acknowledging_stops_reminders_until_taken_back() -> None:
    d = desk("routes: [{match: {}, notify: [chat], repeat_interval: 1h}]")
    d.plan([failed("run_1")])
    assert sent(d.plan_reminders(at(61))) == [("condition.reminder", "chat")]
    (condition,) = d.conditions.open.values()
    d.plan_ack(incident_id(condition), "ana", None, at(70))
    assert sent(d.plan_reminders(at(200))) == []
    d.plan_unack(incident_id(condition), at(201))
    assert sent(d.plan_reminders(at(202))) == [("condition.reminder", "chat")]


async def test_a_silenced_incident_does_not_escalate() -> None:
    d = desk(ROUTES)
    d.plan([failed("run_1")])
    d.configure(
        d.routes,
        [Silence("maint", {"labels.team": parse_matcher("data")}, ends_at=at(60))],
        d.channels,
    )
    assert sent(d.plan_reminders(at(45))) == []
    d.configure(d.routes, [], d.channels)
    # The silence is over: both tiers are due now (each once).
    assert sorted(sent(d.plan_reminders(at(61)))) == [
        ("incident.escalated", "boss"),
        ("incident.escalated", "boss"),
        ("incident.escalated", "pager"),
        ("incident.escalated", "pager"),
    ]


async def test_ack_names_the_problem_with_the_incident() -> None:
    d = desk(ROUTES)
    with pytest.raises(IncidentError, match="no open incident"):
        d.plan_ack("inc_ffff", "ana", None, at(1))
    with pytest.raises(IncidentError, match="at least 4"):
        d.plan_ack("inc_", "ana", None, at(1))
    d.plan([failed("run_1")])
    (condition,) = d.conditions.open.values()
    ident = incident_id(condition)
    with pytest.raises(IncidentError, match="who"):
        d.plan_ack(ident, "  ", None, at(1))
    with pytest.raises(IncidentError, match="not acknowledged"):
        d.plan_unack(ident, at(1))
    d.plan([finished(3)])
    with pytest.raises(IncidentError, match=f"{ident} is resolved"):
        d.plan_ack(ident, "ana", None, at(4))


async def test_flapping_is_said_once_then_held_until_it_settles() -> None:
    d = desk(
        "notifications: {send_resolved: true}\nroutes: [{match: {}, notify: [chat]}]",
        FlapPolicy(opens=3, window=3600, quiet=1800),
    )
    kinds: list[str] = []
    for n in range(5):  # opens at 0, 10, 20, 30, 40 minutes; closes 5 minutes later
        kinds += [k for k, _ in sent(d.plan([failed("run", 10 * n, n)]))]
        kinds += [k for k, _ in sent(d.plan([finished(10 * n + 5, n)]))]
    assert kinds.count("incident.flapping") == 1
    # Three openings went out; the fourth and fifth were held (only group.finished passes).
    assert kinds.count("group.runs_failed") == 3
    assert d.held >= 2
    d.plan([failed("run", 50, 5)])  # it settles failing
    assert sent(d.plan_reminders(at(70))) == []
    settled = d.plan_reminders(at(81))
    assert sent(settled) == [("incident.flapping", "chat")]
    assert settled.deliveries[0].event.to_status == "settled"
    assert d.plan_reminders(at(200)).deliveries == []


async def test_incidents_survive_the_state_file() -> None:
    d = desk(ROUTES)
    d.plan([failed("run_1")])
    d.plan_reminders(at(10))
    (condition,) = d.conditions.open.values()
    _, acked = d.plan_ack(incident_id(condition), "ana", "looking", at(12))
    back = condition_from_dict(condition_to_dict(acked))
    assert back == acked
    assert incident_id(back) == incident_id(condition)
    assert back.engaged == ("chat", "pager", "boss")
    assert [m.what for m in back.timeline] == ["opened", "escalated", "acknowledged"]


def _valid(body: dict[str, object] | None) -> list[str]:
    assert body is not None
    return validate_event({**body, "routing_key": "R" * 32})


async def test_each_step_of_an_incident_is_its_pagerduty_action_and_the_schema_takes_it() -> None:
    d = desk(ROUTES)
    opening = d.plan([failed("run_1")]).deliveries[0].event
    ident = str(opening.incident["id"]) if opening.incident else ""
    trigger = pagerduty_event(opening, source="etl-host")
    assert trigger is not None
    assert (trigger["event_action"], trigger["dedup_key"]) == ("trigger", ident)
    payload = trigger["payload"]
    assert (payload["severity"], payload["source"], payload["group"]) == (
        "error",
        "etl-host",
        "nightly",
    )
    assert payload["custom_details"]["error"] == "boom"
    assert payload["custom_details"]["acknowledge"] == f"run-watcher ack {ident} --by NAME"
    assert _valid(trigger) == []
    (condition,) = d.conditions.open.values()
    ack_plan, _ = d.plan_ack(ident, "ana", None, at(3))
    ack = pagerduty_event(ack_plan.deliveries[0].event)
    assert ack == {"event_action": "acknowledge", "dedup_key": ident}
    assert _valid(ack) == []
    reminder = reminder_event(condition, at(60), 1)
    assert pagerduty_event(replace(reminder, incident=opening.incident)) is None
    ended = d.plan([finished(20)])
    by_kind = {dl.event.kind: dl.event for dl in ended.deliveries}
    assert pagerduty_event(by_kind[EventKind.GROUP_FINISHED]) is None  # its resolve follows
    resolve = pagerduty_event(by_kind[EventKind.CONDITION_RESOLVED])
    assert resolve == {"event_action": "resolve", "dedup_key": ident}
    # Outside any incident: a failure is a page of its own; good news is not.
    lone = replace(opening, incident=None, kind=EventKind.RUN_STATUS_CHANGED)
    assert (pagerduty_event(lone) or {})["dedup_key"] == lone.event_id
    assert pagerduty_event(replace(lone, severity=Severity.SUCCESS)) is None


def test_the_fake_refuses_what_pagerduty_refuses() -> None:
    assert validate_event({"routing_key": "k", "event_action": "trigger"}) == [
        "'payload' is missing or not an object"
    ]
    assert "'dedup_key' is missing or blank" in validate_event(
        {"routing_key": "k", "event_action": "resolve"}
    )
    problems = validate_event(
        {
            "routing_key": "k",
            "event_action": "trigger",
            "payload": {"summary": "x" * 1025, "source": "s", "severity": "fatal"},
        }
    )
    assert problems == [
        "'payload.summary' is longer than 1024 characters",
        "'payload.severity' must be one of critical, error, warning, info",
    ]


async def test_slack_blocks_stay_within_slacks_limits_whatever_the_error() -> None:
    d = desk(ROUTES)
    huge = replace(failed("run_1"), details=freeze({"group_id": "tgrp_1", "error": "x" * 50_000}))
    event = d.plan([huge]).deliveries[0].event
    assert event.incident is not None
    text, blocks = incident_blocks(event.incident, opened_facts(event))
    assert check_blocks(blocks) is None
    assert len(text) <= 4000
    assert blocks[0]["text"]["text"].startswith("FAILING: [FAILED] run run_1 failed in nightly")
    (condition,) = d.conditions.open.values()
    _, acked = d.plan_ack(incident_id(condition), "ana", "x" * 5000, at(2))
    text, blocks = incident_blocks(incident_view(acked), opened_facts(event))
    assert check_blocks(blocks) is None
    assert blocks[0]["text"]["text"].startswith("ACKNOWLEDGED by ana")
    resolved = d.plan([finished(14)]).deliveries[-1].event
    assert resolved.incident is not None
    assert state_line(resolved.incident) == "RESOLVED after 14m"


def test_a_receivers_retry_after_replaces_the_backoff_within_the_cap() -> None:
    policy = RetryPolicy(max_attempts=5, retry_for=60.0, initial_backoff=1.0, max_backoff=2.0)
    rng = random.Random(1)
    assert next_attempt(policy, 1, 0.0, 10.0, rng, retry_after=30.0) == 40.0
    assert next_attempt(policy, 1, 0.0, 50.0, rng, retry_after=30.0) == 60.0  # the cap
    assert next_attempt(policy, 5, 0.0, 10.0, rng, retry_after=1.0) is None


async def test_the_ticker_escalates_at_each_tiers_time_and_not_after_an_ack() -> None:
    """On virtual time: the ticker wakes when a tier is due, not at its next tick."""
    sunk: list[tuple[float, Plan]] = []

    async def sink(plan: Plan) -> None:
        sunk.append((anyio.current_time(), plan))

    d = desk(ROUTES, sink=sink)

    start = 0.0

    def escalations() -> list[tuple[float, int]]:
        return sorted(
            {
                (round(t - start, 2), int(dl.event.details["tier"]))
                for t, p in sunk
                for dl in p.deliveries
                if dl.event.kind is EventKind.INCIDENT_ESCALATED
            }
        )

    async with anyio.create_task_group() as tg:
        await tg.start(d.run)
        await anyio.sleep(7)  # off the ticker's 60 s beat: only an exact wake-up is on time
        start = anyio.current_time()
        d.plan([failed("run_1", minutes=start / 60)])
        await anyio.sleep(10 * 60 - 1)
        assert escalations() == []
        await anyio.sleep(2)
        assert escalations() == [(600.0, 1)]
        (condition,) = d.conditions.open.values()
        await d.acknowledge(incident_id(condition), "ana")
        await anyio.sleep(3600)
        assert escalations() == [(600.0, 1)]  # acknowledged: tier 2 (30m) never fires
        d.close()
