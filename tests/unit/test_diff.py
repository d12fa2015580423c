from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from watcher.core.diff import counts_delta, diff_group, diff_run
from watcher.core.events import EventKind, WatchRef, WatchType, freeze
from watcher.core.snapshots import FailedRun, GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import Severity, Source

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
TRIGGER = WatchRef(WatchType.TRIGGER_RUN, "run_abc", "send-invoice", freeze({"team": "billing"}))
GROUP = WatchRef(WatchType.PARALLEL_TASK_GROUP, "tgrp_1", "nightly")


def run(status: str, updated: str = "2026-11-22T09:00:00Z", **kw: object) -> RunSnapshot:
    return RunSnapshot(Source.TRIGGER, "run_abc", status, updated_at=updated, **kw)  # type: ignore[arg-type]


def group(active: bool = True, total: int = 3, **counts: int) -> GroupSnapshot:
    return GroupSnapshot(
        "tgrp_1",
        active,
        total,
        freeze(counts),
        modified_at=f"2026-11-22T09:{sum(counts.values()):02d}:00Z",
    )


def test_first_sight_is_a_silent_baseline() -> None:
    assert diff_run(TRIGGER, None, run("EXECUTING"), observed_at=NOW) == []


def test_first_sight_announced_when_asked() -> None:
    (event,) = diff_run(TRIGGER, None, run("FAILED"), observed_at=NOW, announce=True)
    assert event.from_status is None
    assert event.to_status == "FAILED"
    assert event.severity is Severity.FAILURE


def test_same_status_twice_is_no_event() -> None:
    assert (
        diff_run(
            TRIGGER,
            run("EXECUTING"),
            run("EXECUTING", updated="2026-11-22T09:05:00Z"),
            observed_at=NOW,
        )
        == []
    )


def test_transition_event_carries_the_facts() -> None:
    (event,) = diff_run(
        TRIGGER,
        run("EXECUTING"),
        run(
            "CRASHED",
            "2026-11-22T09:01:00Z",
            error_message="OOM",
            task="send-invoice",
            attempt=2,
            tags=("prod",),
        ),
        observed_at=NOW,
        url_template="https://cloud.trigger.dev/runs/{id}",
    )
    assert event.kind is EventKind.RUN_STATUS_CHANGED
    assert (event.from_status, event.to_status) == ("EXECUTING", "CRASHED")
    assert event.severity is Severity.FAILURE
    assert event.subject_id == "run_abc"
    assert event.watch is TRIGGER
    assert event.url == "https://cloud.trigger.dev/runs/run_abc"
    assert event.details["error"] == "OOM"
    assert event.details["task"] == "send-invoice"
    assert event.details["attempt"] == 2
    assert event.observed_at == NOW


def test_event_id_is_deterministic_and_ignores_observation_time() -> None:
    a = diff_run(TRIGGER, run("EXECUTING"), run("FAILED", "t1"), observed_at=NOW)[0]
    b = diff_run(
        TRIGGER, run("EXECUTING"), run("FAILED", "t1"), observed_at=datetime(2030, 1, 1, tzinfo=UTC)
    )[0]
    c = diff_run(TRIGGER, run("EXECUTING"), run("FAILED", "t2"), observed_at=NOW)[0]
    assert a.event_id == b.event_id
    assert a.event_id != c.event_id
    assert a.event_id.startswith("evt_")


def test_event_id_is_the_same_whatever_the_watcher_saw_before() -> None:
    # An HA pair: one replica caught EXECUTING, the other polled while the run was
    # still QUEUED. The change upstream is one change, with one id.
    a = diff_run(TRIGGER, run("EXECUTING"), run("FAILED", "t1"), observed_at=NOW)[0]
    b = diff_run(TRIGGER, run("QUEUED"), run("FAILED", "t1"), observed_at=NOW)[0]
    assert (a.from_status, b.from_status) == ("EXECUTING", "QUEUED")
    assert a.event_id == b.event_id


def test_unknown_status_is_reported_not_crashed() -> None:
    (event,) = diff_run(TRIGGER, run("EXECUTING"), run("HIBERNATING"), observed_at=NOW)
    assert event.to_status == "HIBERNATING"
    assert event.severity is Severity.WARNING
    assert event.details["unknown_status"] is True


def test_group_baseline_is_silent_even_with_failed_runs() -> None:
    obs = GroupObservation(group(queued=2, failed=1), (FailedRun("trun_x", "boom"),), "ev_1", True)
    assert diff_group(GROUP, None, obs, observed_at=NOW) == []


def test_group_runs_added_counts_and_failures() -> None:
    before = group(total=3, queued=3)
    after = group(total=5, queued=2, running=2, failed=1)
    obs = GroupObservation(
        after, (FailedRun("trun_x", "boom", "m1"), FailedRun("trun_x", "boom", "m1")), "ev_2", True
    )
    events = diff_group(GROUP, before, obs, observed_at=NOW, run_url_template="https://p/{id}")
    kinds = [e.kind for e in events]
    assert kinds == [
        EventKind.GROUP_RUNS_ADDED,
        EventKind.GROUP_RUNS_FAILED,
        EventKind.GROUP_COUNTS_CHANGED,
    ]
    added, failed, counts = events
    assert added.details["added"] == 2
    assert failed.subject_id == "trun_x"
    assert failed.details["error"] == "boom"
    assert failed.severity is Severity.FAILURE
    assert failed.url == "https://p/trun_x"
    assert counts.details["delta"] == {"failed": 1, "queued": -1, "running": 2}


def test_failed_run_event_id_is_the_same_however_the_run_was_learned_of() -> None:
    before = group(queued=3)
    one = diff_group(
        GROUP,
        before,
        GroupObservation(group(queued=2, failed=1), (FailedRun("trun_x", "boom", "m1"),)),
        observed_at=NOW,
    )
    other = diff_group(
        GROUP,
        group(queued=1, running=1, failed=0),
        GroupObservation(
            group(running=1, failed=2),
            (FailedRun("trun_y", "x", "m2"), FailedRun("trun_x", "boom", "m1")),
        ),
        observed_at=NOW,
    )
    ids_one = {e.event_id for e in one if e.kind is EventKind.GROUP_RUNS_FAILED}
    ids_other = {e.subject_id: e.event_id for e in other if e.kind is EventKind.GROUP_RUNS_FAILED}
    assert ids_one == {ids_other["trun_x"]}


def test_group_finishing_with_and_without_failures() -> None:
    (_, finished) = diff_group(
        GROUP, group(running=3), GroupObservation(group(False, completed=3)), observed_at=NOW
    )
    assert finished.kind is EventKind.GROUP_FINISHED
    assert finished.severity is Severity.SUCCESS
    assert (finished.from_status, finished.to_status) == ("active", "inactive")
    (_, failed) = diff_group(
        GROUP,
        group(running=3),
        GroupObservation(group(False, completed=2, failed=1)),
        observed_at=NOW,
    )
    assert failed.severity is Severity.FAILURE


def test_group_reactivated_only_after_having_runs() -> None:
    events = diff_group(
        GROUP,
        group(False, completed=3),
        GroupObservation(group(True, total=4, completed=3, queued=1)),
        observed_at=NOW,
    )
    assert [e.kind for e in events] == [
        EventKind.GROUP_RUNS_ADDED,
        EventKind.GROUP_COUNTS_CHANGED,
        EventKind.GROUP_REACTIVATED,
    ]
    empty = GroupSnapshot("tgrp_1", False, 0)
    events = diff_group(
        GROUP, empty, GroupObservation(group(True, total=1, queued=1)), observed_at=NOW
    )
    assert EventKind.GROUP_REACTIVATED not in [e.kind for e in events]


def test_action_required_raises_counts_change_to_warning() -> None:
    events = diff_group(
        GROUP,
        group(running=3),
        GroupObservation(group(running=2, action_required=1)),
        observed_at=NOW,
    )
    assert events[0].severity is Severity.WARNING


def test_group_notify_initial() -> None:
    events = diff_group(
        GROUP, None, GroupObservation(group(False, completed=3)), observed_at=NOW, announce=True
    )
    assert [e.kind for e in events] == [EventKind.GROUP_FINISHED]
    assert events[0].from_status is None


def test_unchanged_group_is_silent() -> None:
    snap = group(running=3)
    assert diff_group(GROUP, snap, GroupObservation(replace(snap)), observed_at=NOW) == []


statuses = st.sampled_from(
    ["QUEUED", "EXECUTING", "REATTEMPTING", "COMPLETED", "FAILED", "CRASHED", "NEWTHING"]
)


@given(st.lists(statuses, min_size=1, max_size=30))
def test_events_compose_to_the_final_state(sequence: list[str]) -> None:
    """Applying any sequence of snapshots: the events chain from the first status to the last."""
    previous = None
    chain: list[tuple[str | None, str]] = []
    for i, status in enumerate(sequence):
        current = run(status, f"2026-11-22T09:{i:02d}:00Z")
        chain += [
            (e.from_status, e.to_status)
            for e in diff_run(TRIGGER, previous, current, observed_at=NOW)
        ]
        previous = current
    state = sequence[0]
    for before, after in chain:
        assert before == state
        assert after != before
        state = after
    assert state == sequence[-1]


counts_st = st.dictionaries(
    st.sampled_from(["queued", "running", "completed", "failed"]), st.integers(0, 50)
)


@given(counts_st, counts_st)
def test_counts_delta_applies(before: dict[str, int], after: dict[str, int]) -> None:
    delta = counts_delta(before, after)
    rebuilt = {k: before.get(k, 0) + delta.get(k, 0) for k in set(before) | set(after)}
    assert {k: v for k, v in rebuilt.items() if v} == {k: v for k, v in after.items() if v}
    assert all(v != 0 for v in delta.values())
