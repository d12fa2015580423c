"""What a realtime row means for a run its watch knows: applied directly, or polled."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from watcher.core.pushed import moved, read_row
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source

SEEN = RunSnapshot(
    Source.TRIGGER,
    "run_a",
    "EXECUTING",
    updated_at="2026-12-02T07:00:00.120Z",
    attempt=2,
    version="20261202.1",
)
LATER = "2026-12-02T07:00:05.000Z"


def verdict(status: str, internal: str | None = None, **kw: Any) -> object:
    return read_row(
        kw.pop("known", SEEN),
        status=status,
        internal=internal or status,
        updated_at=kw.pop("updated_at", LATER),
        **kw,
    )


def test_a_wait_is_applied_with_what_the_last_poll_read() -> None:
    applied = verdict("WAITING", "WAITING_TO_RESUME", trail=("EXECUTING", "WAITING_TO_RESUME"))
    assert isinstance(applied, RunSnapshot)
    assert (applied.status, applied.updated_at) == ("WAITING", LATER)
    assert (applied.attempt, applied.version, applied.run_id) == (2, "20261202.1", "run_a")


def test_a_row_that_only_moved_in_time_is_applied_and_a_still_one_is_nothing() -> None:
    moved = verdict("EXECUTING")
    assert isinstance(moved, RunSnapshot)
    assert moved.updated_at == LATER
    assert verdict("EXECUTING", updated_at=SEEN.updated_at) == "same"


@pytest.mark.parametrize(
    ("status", "internal", "trail"),
    [
        ("COMPLETED", "COMPLETED_SUCCESSFULLY", ()),  # an outcome: the alert needs the poll
        ("FAILED", "COMPLETED_WITH_ERRORS", ()),
        ("EXECUTING", "RETRYING_AFTER_FAILURE", ()),  # a retry: the poll reads the attempt
        ("EXECUTING", "EXECUTING", ("EXECUTING", "RETRYING_AFTER_FAILURE", "EXECUTING")),
        # Left RETRYING_AFTER_FAILURE: the next attempt started, the poll reads it.
        ("EXECUTING", "EXECUTING", ("RETRYING_AFTER_FAILURE", "EXECUTING")),
        ("WAITING", "WAITING_TO_RESUME", ("WAITING_TO_RESUME", "EXECUTING", "WAITING_TO_RESUME")),
        ("RUNNING_SOMEHOW", "RUNNING_SOMEHOW", ()),  # a status the watcher does not know
    ],
)
def test_what_a_row_cannot_tell_is_polled(status: str, internal: str, trail: tuple[str]) -> None:
    assert verdict(status, internal, trail=trail) == "poll"


def test_a_run_leaving_a_queue_for_an_attempt_is_polled() -> None:
    queued = RunSnapshot(Source.TRIGGER, "run_a", "QUEUED", updated_at=SEEN.updated_at)
    assert verdict("EXECUTING", known=queued) == "poll"
    assert verdict("CANCELED", known=queued) == "poll"  # terminal: polled too


def test_no_baseline_or_a_failing_watch_is_polled() -> None:
    assert verdict("WAITING", known=None) == "poll"
    assert verdict("WAITING", healthy=False) == "poll"


def test_a_delay_is_dropped_once_the_run_leaves_it() -> None:
    delayed = RunSnapshot(
        Source.TRIGGER,
        "run_a",
        "DELAYED",
        updated_at=SEEN.updated_at,
        delayed_until=datetime(2026, 12, 2, 8, tzinfo=UTC),
    )
    queued = verdict("QUEUED", "PENDING", known=delayed)
    assert isinstance(queued, RunSnapshot)
    assert queued.delayed_until is None


def test_a_snapshot_row_that_moved_in_any_way_is_polled() -> None:
    def snap(status: str, internal: str, at: str | None = LATER, known: Any = SEEN) -> bool:
        return moved(known, status=status, internal=internal, updated_at=at)

    assert not snap("EXECUTING", "EXECUTING", SEEN.updated_at)  # as the watch saw it
    assert snap("EXECUTING", "EXECUTING")  # same status, another time: polled
    assert snap("WAITING", "WAITING_TO_RESUME", SEEN.updated_at)
    assert snap("EXECUTING", "RETRYING_AFTER_FAILURE", SEEN.updated_at)
    assert snap("EXECUTING", "EXECUTING", known=None)  # no baseline
