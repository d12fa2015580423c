"""The per-watch state machine, driven without sockets or sleeps."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from watcher.core.events import EventKind, WatchRef, WatchType, freeze
from watcher.core.health import Problem, ProblemKind
from watcher.core.schedule import SchedulePolicy, initial_state
from watcher.core.snapshots import FailedRun, GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import Source
from watcher.core.watch import (
    DiscoveryState,
    Listing,
    StepContext,
    needs_failed_runs,
    new_watch_state,
    step_discovery,
    step_failure,
    step_group,
    step_run,
)

POLICY = SchedulePolicy(min_interval=2.0, max_interval=60.0)
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
RUN = WatchRef(WatchType.TRIGGER_RUN, "run_a")
GROUP = WatchRef(WatchType.PARALLEL_TASK_GROUP, "tgrp_1", "nightly")


def ctx(watch: WatchRef = RUN, seconds: float = 0) -> StepContext:
    return StepContext(
        watch, NOW + timedelta(seconds=seconds), POLICY, random.Random(7), error_threshold=3
    )


def trun(status: str, minute: int = 0, **kw: Any) -> RunSnapshot:
    return RunSnapshot(
        Source.TRIGGER, "run_a", status, updated_at=f"2026-11-22T09:{minute:02d}:00Z", **kw
    )


def test_run_lifecycle_baseline_transitions_terminal() -> None:
    state = new_watch_state(POLICY)
    step = step_run(state, trun("QUEUED"), ctx())
    assert step.events == ()
    assert step.delay is not None
    step = step_run(step.state, trun("EXECUTING", 1), ctx())
    assert [(e.from_status, e.to_status) for e in step.events] == [("QUEUED", "EXECUTING")]
    assert step.delay is not None
    assert step.delay <= POLICY.min_interval
    step = step_run(step.state, trun("FAILED", 2, error_message="boom"), ctx())
    assert step.events[0].details["error"] == "boom"
    assert step.delay is None
    assert step.state.done


def test_an_older_answer_never_steps_backwards() -> None:
    state = step_run(new_watch_state(POLICY), trun("EXECUTING", 5), ctx()).state
    step = step_run(state, trun("QUEUED", 1), ctx())
    assert step.events == ()
    assert isinstance(step.state.snapshot, RunSnapshot)
    assert step.state.snapshot.status == "EXECUTING"


def test_a_run_that_moved_and_came_back_keeps_the_fast_pace() -> None:
    # EXECUTING -> WAITING -> EXECUTING between two polls: no event, but it is active.
    state = new_watch_state(POLICY)
    for minute in range(1, 6):
        state = step_run(state, trun("EXECUTING", 0), ctx(seconds=minute * 2)).state
    idle = step_run(state, trun("EXECUTING", 0), ctx(seconds=12))
    moved = step_run(state, trun("EXECUTING", 1), ctx(seconds=12))
    assert moved.events == idle.events == ()
    assert idle.delay is not None
    assert moved.delay is not None
    assert moved.delay <= POLICY.min_interval < idle.delay
    assert moved.state.status_since == idle.state.status_since  # still EXECUTING since then


def test_quiet_is_counted_from_the_last_move_not_from_the_status() -> None:
    # EXECUTING since 09:00, moved at 09:59:58 (a WAITING excursion): not quiet for an hour.
    state = step_run(new_watch_state(POLICY), trun("EXECUTING", 0), ctx()).state
    moved = RunSnapshot(Source.TRIGGER, "run_a", "EXECUTING", updated_at="2026-11-22T09:59:58Z")
    state = step_run(state, moved, ctx(seconds=1)).state
    step = step_run(state, moved, ctx(seconds=3))
    assert step.delay is not None
    assert step.delay <= POLICY.min_interval
    assert step_run(state, moved, ctx(seconds=600)).state.schedule.interval == POLICY.max_interval


def test_delayed_run_sleeps_until_due() -> None:
    due = NOW + timedelta(seconds=45)
    step = step_run(new_watch_state(POLICY), trun("DELAYED", delayed_until=due), ctx())
    assert step.delay == 45.0


def test_failures_report_once_then_recover_once() -> None:
    state = step_run(new_watch_state(POLICY), trun("EXECUTING"), ctx()).state
    problem = Problem(ProblemKind.UNREACHABLE, "HTTP 500 from GET /api/v3/runs/run_a", 500)
    kinds = []
    for _ in range(5):
        step = step_failure(state, problem, ctx())
        state = step.state
        kinds += [e.kind for e in step.events]
    assert kinds == [EventKind.WATCH_ERROR]
    step = step_run(state, trun("EXECUTING"), ctx())
    assert [e.kind for e in step.events] == [EventKind.WATCH_RECOVERED]
    assert step.events[0].from_status == "unreachable"
    step = step_run(step.state, trun("EXECUTING"), ctx())
    assert step.events == ()


def test_watch_error_event_fields() -> None:
    state = new_watch_state(POLICY)
    step = step_failure(
        state, Problem(ProblemKind.AUTH_FAILED, "HTTP 401 from GET /x: nope", 401), ctx()
    )
    (event,) = step.events
    assert event.kind is EventKind.WATCH_ERROR
    assert event.to_status == "auth_failed"
    assert event.details["status_code"] == 401
    assert "401" in event.details["message"]
    assert step.delay is not None
    assert step.delay >= POLICY.max_interval * 0.9


def test_a_change_during_an_outage_is_notified_after_recovery() -> None:
    state = step_run(new_watch_state(POLICY), trun("EXECUTING"), ctx()).state
    for _ in range(3):
        state = step_failure(state, Problem(ProblemKind.UNREACHABLE, "timeout"), ctx()).state
    step = step_run(state, trun("FAILED", 3), ctx())
    assert [e.kind for e in step.events] == [
        EventKind.WATCH_RECOVERED,
        EventKind.RUN_STATUS_CHANGED,
    ]


def gsnap(active: bool = True, **counts: int) -> GroupSnapshot:
    return GroupSnapshot("tgrp_1", active, sum(counts.values()), freeze(counts))


def test_group_cursor_and_failed_run_accounting() -> None:
    state = new_watch_state(POLICY)
    baseline = gsnap(running=3, failed=1)
    assert needs_failed_runs(state, baseline)
    step = step_group(
        state, GroupObservation(baseline, (FailedRun("trun_old"),), "ev_1", True), ctx(GROUP)
    )
    assert step.events == ()
    assert (step.state.cursor, step.state.known_failed) == ("ev_1", 1)
    assert not needs_failed_runs(step.state, baseline)

    more = gsnap(running=1, failed=3)
    assert needs_failed_runs(step.state, more)
    # The stream lags: only one of the two new failures is there yet.
    step = step_group(
        step.state, GroupObservation(more, (FailedRun("trun_b"),), "ev_2", True), ctx(GROUP)
    )
    assert [e.subject_id for e in step.events if e.kind is EventKind.GROUP_RUNS_FAILED] == [
        "trun_b"
    ]
    assert needs_failed_runs(step.state, more)
    step = step_group(
        step.state, GroupObservation(more, (FailedRun("trun_c"),), "ev_3", True), ctx(GROUP)
    )
    assert [e.subject_id for e in step.events if e.kind is EventKind.GROUP_RUNS_FAILED] == [
        "trun_c"
    ]
    assert step.state.cursor == "ev_3"
    assert not needs_failed_runs(step.state, more)


def test_group_not_streamed_keeps_cursor() -> None:
    state = step_group(
        new_watch_state(POLICY), GroupObservation(gsnap(running=2)), ctx(GROUP)
    ).state
    state = step_group(state, GroupObservation(gsnap(running=1, completed=1)), ctx(GROUP)).state
    assert state.cursor is None


def test_finished_group_is_parked_not_dropped() -> None:
    state = step_group(
        new_watch_state(POLICY), GroupObservation(gsnap(running=2)), ctx(GROUP)
    ).state
    step = step_group(state, GroupObservation(gsnap(False, completed=2)), ctx(GROUP))
    assert EventKind.GROUP_FINISHED in [e.kind for e in step.events]
    step = step_group(step.state, GroupObservation(gsnap(False, completed=2)), ctx(GROUP))
    assert step.events == ()
    assert step.delay is not None
    assert step.delay >= POLICY.max_interval * 0.9


DISCOVERY = WatchRef(WatchType.TRIGGER_RUNS, "prod")


def test_discovery_baseline_then_new_runs() -> None:
    state = DiscoveryState(schedule=initial_state(POLICY))
    step = step_discovery(state, Listing((trun("FAILED"),)), ctx(DISCOVERY))
    assert [r.run_id for r in step.baseline_runs] == ["run_a"]
    assert step.new_runs == ()
    newer = RunSnapshot(Source.TRIGGER, "run_b", "FAILED")
    step = step_discovery(step.state, Listing((newer, trun("FAILED"))), ctx(DISCOVERY))
    assert [r.run_id for r in step.new_runs] == ["run_b"]
    step = step_discovery(step.state, Listing((newer, trun("FAILED"))), ctx(DISCOVERY))
    assert step.new_runs == ()


def test_discovery_prunes_on_complete_pass_and_respects_watched() -> None:
    state = step_discovery(
        DiscoveryState(schedule=initial_state(POLICY)),
        Listing((trun("EXECUTING"),)),
        ctx(DISCOVERY),
    ).state
    state = step_discovery(state, Listing(()), ctx(DISCOVERY)).state
    assert state.seen == frozenset()
    # Back in the window while still watched: not new.
    step = step_discovery(state, Listing((trun("EXECUTING"),)), ctx(DISCOVERY), watched={"run_a"})
    assert step.new_runs == ()
    # An incomplete pass never forgets.
    state = step_discovery(step.state, Listing((), complete=False), ctx(DISCOVERY)).state
    assert state.seen == frozenset({"run_a"})


def test_group_status_still_applies_when_its_runs_stream_fails() -> None:
    state = step_group(
        new_watch_state(POLICY), GroupObservation(gsnap(running=3)), ctx(GROUP)
    ).state
    stream_404 = Problem(
        ProblemKind.NOT_FOUND, "HTTP 404 from GET /v1/tasks/groups/tgrp_1/runs", 404
    )
    step = step_group(state, GroupObservation(gsnap(running=2, failed=1)), ctx(GROUP), stream_404)
    kinds = [e.kind for e in step.events]
    assert kinds == [EventKind.WATCH_ERROR, EventKind.GROUP_COUNTS_CHANGED]
    counts = step.events[1]
    assert counts.severity.value == "failure"  # an unnamed failure still pages
    assert step.state.known_failed == 0
    assert step.delay is not None
    assert step.delay <= POLICY.min_interval  # the group itself answers: no error backoff
    # The stream comes back: the failure is named, the problem clears.
    step = step_group(
        step.state,
        GroupObservation(gsnap(running=2, failed=1), (FailedRun("trun_x", "boom"),), "ev_1", True),
        ctx(GROUP),
    )
    assert [e.kind for e in step.events] == [EventKind.WATCH_RECOVERED, EventKind.GROUP_RUNS_FAILED]
