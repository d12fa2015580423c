from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watcher.core.conditions import ConditionBook, ConditionKind, reminder_event
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.statuses import Severity, Source

T0 = datetime(2026, 11, 22, 10, tzinfo=UTC)
WATCH = WatchRef(WatchType.PARALLEL_TASK_RUN, "trun_a", "profile")
GROUP = WatchRef(WatchType.PARALLEL_TASK_GROUP, "tgrp_1", "nightly")


def ev(
    kind: EventKind,
    to: str = "x",
    subject: str = "trun_a",
    minutes: int = 0,
    watch: WatchRef = WATCH,
    **details: object,
) -> Event:
    return Event(
        f"evt_{kind.value}_{to}_{minutes}",
        kind,
        Severity.WARNING,
        Source.PARALLEL,
        watch,
        subject,
        "running",
        to,
        T0 + timedelta(minutes=minutes),
        freeze(details),
    )


def test_watch_problem_opens_and_resolves() -> None:
    book = ConditionBook()
    assert book.observe(ev(EventKind.WATCH_ERROR, "unreachable")) == []
    assert [c.kind for c in book.open.values()] == [ConditionKind.WATCH_PROBLEM]
    ((condition, resolved),) = book.observe(ev(EventKind.WATCH_RECOVERED, "ok", minutes=7))
    assert condition.kind is ConditionKind.WATCH_PROBLEM
    assert resolved.kind is EventKind.CONDITION_RESOLVED
    assert resolved.severity is Severity.SUCCESS
    assert resolved.details["duration_seconds"] == 420.0
    assert resolved.cause is not None
    assert resolved.cause.kind is EventKind.WATCH_ERROR
    assert resolved.origin is resolved.cause
    assert book.open == {}


def test_action_required_stays_open_until_the_status_moves_on() -> None:
    book = ConditionBook()
    book.observe(ev(EventKind.RUN_STATUS_CHANGED, "action_required"))
    assert book.observe(ev(EventKind.RUN_STATUS_CHANGED, "action_required", minutes=1)) == []
    (condition,) = book.open.values()
    assert condition.count == 2
    ((_, resolved),) = book.observe(ev(EventKind.RUN_STATUS_CHANGED, "running", minutes=5))
    assert resolved.details["now"] == "running"


def test_stuck_closes_on_the_next_status_change() -> None:
    book = ConditionBook()
    book.observe(ev(EventKind.RUN_STUCK, "running"))
    ((condition, _),) = book.observe(ev(EventKind.RUN_STATUS_CHANGED, "completed", minutes=3))
    assert condition.kind is ConditionKind.RUN_STUCK


def test_failing_group_ends_its_incident_but_is_not_resolvable_news() -> None:
    book = ConditionBook()
    book.observe(
        ev(EventKind.GROUP_RUNS_FAILED, "failed", "trun_x", watch=GROUP, group_id="tgrp_1")
    )
    book.observe(
        ev(EventKind.GROUP_RUNS_FAILED, "failed", "trun_y", watch=GROUP, group_id="tgrp_1")
    )
    (condition,) = book.open.values()
    assert (condition.kind, condition.count) == (ConditionKind.GROUP_FAILING, 2)
    ((closed, _),) = book.observe(ev(EventKind.GROUP_FINISHED, "inactive", "tgrp_1", watch=GROUP))
    # It ends (its incident resolves), but routes hear of it through group.finished alone.
    assert closed.key == condition.key
    assert not closed.kind.resolvable
    assert [m.what for m in condition.timeline] == ["opened", "event"]
    assert book.open == {}


def test_reminder_event() -> None:
    book = ConditionBook()
    book.observe(ev(EventKind.WATCH_ERROR, "unreachable"))
    (condition,) = book.open.values()
    reminder = reminder_event(condition, T0 + timedelta(hours=2), 3)
    assert reminder.kind is EventKind.CONDITION_REMINDER
    assert reminder.details["open_seconds"] == 7200.0
    assert reminder.details["reminder"] == 3
    assert reminder.origin.kind is EventKind.WATCH_ERROR
    assert reminder.event_id != reminder_event(condition, T0 + timedelta(hours=3), 4).event_id


def test_forget_watch() -> None:
    book = ConditionBook()
    book.observe(ev(EventKind.WATCH_ERROR, "unreachable"))
    book.forget_watch(WATCH.key)
    assert book.open == {}
