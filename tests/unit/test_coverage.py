"""One upstream change, one event: the pure half (ids, merging, the announced record)."""

from __future__ import annotations

from datetime import UTC, datetime

from watcher.core.coverage import Announced, merge_watches
from watcher.core.diff import diff_group, diff_run
from watcher.core.events import WatchRef, WatchType, freeze
from watcher.core.snapshots import FailedRun, GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import Source

NOW = datetime(2026, 12, 2, 10, tzinfo=UTC)
SINGLE = WatchRef(
    WatchType.TRIGGER_RUN, "run_a", "invoice", freeze({"team": "billing", "tier": "1"})
)
FILTER = WatchRef(
    WatchType.TRIGGER_RUNS, "prod-failures", None, freeze({"team": "ops", "env": "prod"})
)


def failed(watch: WatchRef, previous: str | None) -> list:  # type: ignore[type-arg]
    before = (
        RunSnapshot(Source.TRIGGER, "run_a", previous, "2026-12-02T09:00:00.000Z")
        if previous
        else None
    )
    now = RunSnapshot(Source.TRIGGER, "run_a", "FAILED", "2026-12-02T09:05:00.000Z", "boom")
    return diff_run(watch, before, now, observed_at=NOW, announce=True)


def test_two_watches_give_one_change_the_same_id() -> None:
    (by_single,) = failed(SINGLE, "EXECUTING")
    (by_filter,) = failed(FILTER, None)  # discovered: no previous status
    assert by_single.event_id == by_filter.event_id


def test_a_group_failure_and_the_runs_own_watch_share_an_id() -> None:
    group = WatchRef(WatchType.PARALLEL_TASK_GROUP, "tgrp_1")
    single = WatchRef(WatchType.PARALLEL_TASK_RUN, "trun_x")
    stamp = "2026-12-02T09:05:00.123456Z"
    before = GroupSnapshot("tgrp_1", True, 2, freeze({"running": 2}), modified_at="a")
    after = GroupSnapshot("tgrp_1", True, 2, freeze({"running": 1, "failed": 1}), modified_at="b")
    events = diff_group(
        group,
        before,
        GroupObservation(after, (FailedRun("trun_x", "boom", stamp),)),
        observed_at=NOW,
    )
    by_group = next(e for e in events if e.subject_id == "trun_x")
    (by_run,) = diff_run(
        single,
        RunSnapshot(Source.PARALLEL, "trun_x", "running", "x"),
        RunSnapshot(Source.PARALLEL, "trun_x", "failed", stamp, group_id="tgrp_1"),
        observed_at=NOW,
    )
    assert by_group.event_id == by_run.event_id


def test_the_first_is_announced_with_every_watch_and_the_copy_dropped() -> None:
    announced = Announced()
    (first,) = failed(FILTER, None)
    (copy,) = failed(SINGLE, "EXECUTING")
    assert announced.first([first]) == ([first], [])
    assert announced.first([copy]) == ([], [(copy, FILTER.key)])
    merged = merge_watches(first, [SINGLE, FILTER])
    # The most precise watch speaks; its labels win a conflict; the others' are kept.
    assert merged.watch.key == SINGLE.key
    assert dict(merged.watch.labels) == {"team": "billing", "tier": "1", "env": "prod"}
    assert [w["key"] for w in merged.details["watches"]] == [SINGLE.key, FILTER.key]
    assert merged.event_id == first.event_id
    # Whichever watch saw it first, the merged event is the same.
    assert merge_watches(copy, [FILTER]).watch == merged.watch


def test_the_record_is_bounded() -> None:
    announced = Announced(capacity=2)
    events = []
    for index in range(3):
        now = RunSnapshot(Source.TRIGGER, f"run_{index}", "FAILED", "t", "boom")
        (event,) = diff_run(SINGLE, None, now, observed_at=NOW, announce=True)
        events.append(event)
        announced.first([event])
    # The oldest was forgotten; the two most recent are still known.
    assert announced.first([events[0]]) == ([events[0]], [])
    assert announced.first([events[2]])[1] == [(events[2], SINGLE.key)]
