"""Per-run deadlines on virtual time: each reference point, once each, across a restart,
and the conditions they open and close."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from watcher.core.codec import watch_state_from_dict, watch_state_to_dict
from watcher.core.conditions import ConditionBook, ConditionKind
from watcher.core.deadlines import RunDeadlines
from watcher.core.events import Event, EventKind, WatchRef, WatchType
from watcher.core.schedule import SchedulePolicy
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source
from watcher.core.watch import (
    StepContext,
    WatchState,
    mark_late,
    new_watch_state,
    step_run,
    tick_run,
)

POLICY = SchedulePolicy(min_interval=2.0, max_interval=60.0)
CREATED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
RUN = WatchRef(WatchType.TRIGGER_RUN, "run_a")
LIMITS = RunDeadlines(queued=600.0, running=3600.0, total=5400.0)


def at(seconds: float, deadlines: RunDeadlines = LIMITS) -> StepContext:
    return StepContext(
        RUN,
        CREATED + timedelta(seconds=seconds),
        POLICY,
        random.Random(7),
        deadlines=deadlines,
    )


def run(status: str, seconds: float, **kw: object) -> RunSnapshot:
    stamp = (CREATED + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    return RunSnapshot(
        Source.TRIGGER,
        "run_a",
        status,
        updated_at=stamp,
        created_at="2026-11-22T10:00:00.000Z",
        **kw,  # type: ignore[arg-type]
    )


def missed(events: tuple[Event, ...]) -> list[tuple[str, str]]:
    return [
        (str(e.details["deadline"]), str(e.details["reference"]))
        for e in events
        if e.kind is EventKind.RUN_DEADLINE_MISSED
    ]


def test_a_queued_run_misses_its_queued_deadline_once_then_runs_within_its_limits() -> None:
    step = step_run(new_watch_state(POLICY), run("QUEUED", 0), at(60))
    assert step.events == ()
    assert step.check_in == 540.0  # looked at again when the queued deadline falls due
    step = step_run(step.state, run("QUEUED", 0), at(601))
    assert missed(step.events) == [("queued", "queued")]
    event = step.events[0]
    assert event.details["elapsed_seconds"] == 601.0
    assert event.details["limit_seconds"] == 600.0
    assert event.details["status"] == "QUEUED"
    again = step_run(step.state, run("DEQUEUED", 610), at(620))  # still in the queue
    assert missed(again.events) == []
    started = step_run(
        again.state, run("EXECUTING", 700, started_at="2026-11-22T10:11:40.000Z"), at(701)
    )
    assert missed(started.events) == []
    assert started.check_in == 3600.0 + 700 - 701  # the running deadline comes first


def test_the_total_deadline_counts_from_creation_and_running_from_the_start() -> None:
    begun = run("EXECUTING", 120, started_at="2026-11-22T10:02:00.000Z")
    step = step_run(new_watch_state(POLICY), begun, at(130))
    step = step_run(step.state, begun, at(3721))
    assert missed(step.events) == [("running", "started")]
    step = step_run(step.state, begun, at(5401))
    assert missed(step.events) == [("total", "created")]
    step = step_run(step.state, begun, at(6000))
    assert missed(step.events) == []
    done = step_run(step.state, run("COMPLETED", 6001), at(6002))
    assert missed(done.events) == []
    assert done.check_in is None


def test_a_delayed_run_waits_in_the_queue_from_when_it_was_seen_queued() -> None:
    step = step_run(new_watch_state(POLICY), run("DELAYED", 0), at(10))
    step = step_run(step.state, run("QUEUED", 3000), at(3001))
    assert missed(step.events) == []  # delayed on purpose: the queued clock starts now
    step = step_run(step.state, run("QUEUED", 3000), at(3601))
    assert missed(step.events) == [("queued", "queued")]


def test_a_tick_raises_a_deadline_without_a_poll_and_only_once() -> None:
    step = step_run(new_watch_state(POLICY), run("QUEUED", 0), at(1))
    tick = tick_run(step.state, at(600))
    assert missed(tick.events) == [("queued", "queued")]
    assert tick.delay == 0.0  # the schedule stands
    assert missed(tick_run(tick.state, at(700)).events) == []


def test_a_reported_deadline_survives_a_restart_and_one_missed_while_down_is_late() -> None:
    step = step_run(new_watch_state(POLICY), run("QUEUED", 0), at(601))
    assert missed(step.events) == [("queued", "queued")]
    restored = watch_state_from_dict(watch_state_to_dict(step.state), POLICY)
    assert isinstance(restored, WatchState)
    assert restored.deadlines_reported == step.state.deadlines_reported
    assert missed(step_run(restored, run("QUEUED", 0), at(900)).events) == []
    # Down from 700 s to 6000 s: the total deadline fell due meanwhile.
    later = step_run(restored, run("QUEUED", 0), at(6000)).events
    assert missed(later) == [("total", "created")]
    started_at = CREATED + timedelta(seconds=5990)
    assert mark_late(later, started_at)[0].details.get("seen_late") is True


def test_a_deadline_opens_a_condition_the_right_change_resolves_with_the_outcome() -> None:
    limits = RunDeadlines(queued=600.0, total=5400.0)
    book = ConditionBook()
    step = step_run(new_watch_state(POLICY), run("QUEUED", 0), at(601, limits))
    assert book.observe(step.events[0]) == []
    key = "trigger_run:run_a#run_a#deadline:queued"
    assert book.open[key].kind is ConditionKind.RUN_DEADLINE
    begun = run("EXECUTING", 620, started_at="2026-11-22T10:10:20.000Z")
    started = step_run(step.state, begun, at(621, limits))
    closed = [c for e in started.events for c in book.observe(e)]
    assert [(c.key, r.details["now"]) for c, r in closed] == [(key, "EXECUTING")]
    late = step_run(started.state, begun, at(5401, limits))
    assert missed(late.events) == [("total", "created")]
    assert [c for e in late.events for c in book.observe(e)] == []
    assert list(book.open) == ["trigger_run:run_a#run_a#deadline:total"]
    done = step_run(late.state, run("FAILED", 5500, error_message="boom"), at(5501, limits))
    closed = [c for e in done.events for c in book.observe(e)]
    assert [(c.key, r.details["now"]) for c, r in closed] == [
        ("trigger_run:run_a#run_a#deadline:total", "FAILED")
    ]


def test_runs_that_meet_their_deadlines_send_nothing() -> None:
    step = step_run(new_watch_state(POLICY), run("QUEUED", 0), at(1))
    step = step_run(
        step.state, run("EXECUTING", 300, started_at="2026-11-22T10:05:00.000Z"), at(301)
    )
    step = step_run(step.state, run("COMPLETED", 3000), at(3001))
    assert missed(step.events) == []
    assert step.state.deadlines_reported == frozenset()
