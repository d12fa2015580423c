"""Folding a group's event stream into observations: pure, no sockets, no clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from watcher.core.events import WatchRef, WatchType, freeze
from watcher.core.group_stream import MAX_HOLD, SETTLE, StreamBuffer, flush, hold, take
from watcher.core.schedule import SchedulePolicy
from watcher.core.snapshots import FailedRun, GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import Source
from watcher.core.watch import StepContext, WatchState, new_watch_state, step_group
from watcher.sources.parallel_models import StreamErrorEvent, parse_group_event

POLICY = SchedulePolicy(min_interval=2.0, max_interval=60.0)
GROUP = WatchRef(WatchType.PARALLEL_TASK_GROUP, "tgrp_1")
CTX = StepContext(GROUP, datetime(2026, 11, 22, 10, tzinfo=UTC), POLICY, random.Random(1))


def status(minute: int, **counts: int) -> GroupSnapshot:
    return GroupSnapshot(
        "tgrp_1",
        is_active=bool(counts.get("running")),
        num_task_runs=sum(counts.values()),
        counts=freeze(counts),
        modified_at=f"2026-11-22T09:{minute:02d}:00Z",
    )


def run(run_id: str, state: str, minute: int | None) -> RunSnapshot:
    stamp = None if minute is None else f"2026-11-22T09:{minute:02d}:00Z"
    return RunSnapshot(Source.PARALLEL, run_id, state, updated_at=stamp, error_message="boom")


def baseline() -> WatchState:
    return step_group(new_watch_state(POLICY), GroupObservation(status(0, running=3)), CTX).state


def test_a_status_and_the_failures_that_name_it_make_one_observation() -> None:
    state = baseline()
    buffer = take(StreamBuffer(), state, status(1, running=2, failed=1))
    buffer = take(buffer, state, run("r1", "failed", 1))
    observation = flush(buffer, state)
    assert observation == GroupObservation(
        status(1, running=2, failed=1), (FailedRun("r1", "boom", "2026-11-22T09:01:00Z"),)
    )


def test_stream_and_poll_observations_give_the_same_events() -> None:
    state = baseline()
    buffer = StreamBuffer()
    # The stream's order is not promised: run event first, then two statuses.
    for item in (
        run("r1", "failed", 1),
        status(1, running=2, failed=1),
        status(1, running=1, failed=1, completed=1),
    ):
        buffer = take(buffer, state, item)
    streamed = flush(buffer, state)
    assert streamed is not None
    polled = GroupObservation(
        status(1, running=1, failed=1, completed=1),
        (FailedRun("r1", "boom", "2026-11-22T09:01:00Z"),),
        cursor="ev_9",
        streamed=True,
    )
    a = step_group(state, streamed, CTX)
    b = step_group(state, polled, CTX)
    assert [e.event_id for e in a.events] == [e.event_id for e in b.events]
    assert a.state.known_failed == b.state.known_failed == 1


def test_replayed_history_is_dropped() -> None:
    state = step_group(baseline(), GroupObservation(status(5, running=2, failed=1)), CTX).state
    buffer = take(StreamBuffer(), state, status(1, running=3))  # older than known
    buffer = take(buffer, state, run("r_old", "failed", 4))  # already in the counts
    assert buffer.empty
    assert flush(buffer, state) is None


def test_only_failures_need_naming_and_each_once() -> None:
    state = baseline()
    buffer = take(StreamBuffer(), state, run("r1", "completed", 1))
    assert buffer.empty
    buffer = take(buffer, state, run("r2", "failed", 2))
    buffer = take(buffer, state, run("r2", "failed", 2))
    buffer = take(buffer, state, run("r3", "failed", None))  # no timestamp: kept
    assert [r.run_id for r in buffer.failed] == ["r2", "r3"]
    observation = flush(buffer, state)
    assert observation is not None
    assert observation.snapshot == state.snapshot


def test_hold_waits_for_quiet_but_never_past_max_hold() -> None:
    assert hold(None) is None
    assert hold(0.0) == SETTLE
    assert abs(hold(MAX_HOLD - 0.05) - 0.05) < 1e-9  # type: ignore[operator]
    assert hold(MAX_HOLD + 1) == 0.0


def test_event_parsing_tolerates_unknown_types_and_reports_errors() -> None:
    what = "events"
    assert parse_group_event('{"type": "task_group.progress", "x": 1}', what, "tgrp_1") is None
    event_id, item = parse_group_event(  # type: ignore[misc]
        '{"type": "task_group_status", "event_id": "ev_1", "status": {"num_task_runs": 2,'
        ' "task_run_status_counts": {"running": 2}, "is_active": true, "extra": 1}}',
        what,
        "tgrp_1",
    )
    assert event_id == "ev_1"
    assert isinstance(item, GroupSnapshot)
    assert item.is_active
    assert item.group_id == "tgrp_1"
    with pytest.raises(StreamErrorEvent, match="gone"):
        parse_group_event('{"type": "error", "error": {"message": "gone"}}', what, "tgrp_1")
