"""What a realtime row means for a run: the snapshot a poll would read, or a poll."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from watcher.core.diff import diff_run
from watcher.core.events import WatchRef, WatchType
from watcher.core.pushed import RunRow, attempts_started, moved, numbered, read_row
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source
from watcher.sources.trigger_realtime import run_of_row

SEEN = RunSnapshot(
    Source.TRIGGER,
    "run_a",
    "EXECUTING",
    updated_at="2026-12-02T07:00:00.120Z",
    task="sync",
    attempt=2,
    version="20261202.1",
    environment="prod",
    started_at="2026-12-02T06:59:00.000Z",
)
LATER = "2026-12-02T07:00:05.000Z"
WATCH = WatchRef(WatchType.TRIGGER_RUN, "run_a")
NOW = datetime(2026, 12, 2, 7, 1, tzinfo=UTC)


def row(status: str, internal: str | None = None, **kw: Any) -> RunRow:
    kw.setdefault("updated_at", LATER)
    kw.setdefault("task", "sync")
    kw.setdefault("started_at", SEEN.started_at)
    return RunRow("run_a", status, internal or status, **kw)


def verdict(status: str, internal: str | None = None, **kw: Any) -> object:
    known = kw.pop("known", SEEN)
    trail = kw.pop("trail", (internal or status, internal or status))
    healthy = kw.pop("healthy", True)
    return read_row(known, row(status, internal, **kw), trail=trail, healthy=healthy)


def test_a_wait_is_applied_with_what_the_last_poll_read() -> None:
    applied = verdict("WAITING", "WAITING_TO_RESUME", trail=("EXECUTING", "WAITING_TO_RESUME"))
    assert isinstance(applied, RunSnapshot)
    assert (applied.status, applied.updated_at) == ("WAITING", LATER)
    assert (applied.attempt, applied.version, applied.environment) == (2, "20261202.1", "prod")


def test_an_outcome_is_built_from_the_row_with_its_error_and_times() -> None:
    failed = verdict(
        "FAILED",
        "COMPLETED_WITH_ERRORS",
        trail=("EXECUTING", "COMPLETED_WITH_ERRORS"),
        error_message="card declined",
        error_stack="Error: card declined\n    at run",
        finished_at=LATER,
    )
    assert isinstance(failed, RunSnapshot)
    assert (failed.status, failed.error_message, failed.finished_at) == (
        "FAILED",
        "card declined",
        LATER,
    )
    assert failed.attempt == 2  # the attempt that failed: no new one started
    (event,) = diff_run(WATCH, SEEN, failed, observed_at=NOW)
    assert event.details["duration_seconds"] == 65.0
    assert event.details["version"] == "20261202.1"


def test_a_retry_is_numbered_from_the_rows_trail_as_polling_numbers_it() -> None:
    # The row leaving RETRYING_AFTER_FAILURE starts attempt 3: the retrieve's
    # attemptCount then reads 3, and the retry event's id is named by it.
    waiting = verdict(
        "EXECUTING", "RETRYING_AFTER_FAILURE", trail=("EXECUTING", "RETRYING_AFTER_FAILURE")
    )
    assert isinstance(waiting, RunSnapshot)
    assert waiting.attempt == 2
    retried = read_row(
        waiting,
        row("EXECUTING", updated_at="2026-12-02T07:00:09.000Z"),
        trail=("RETRYING_AFTER_FAILURE", "EXECUTING"),
    )
    assert isinstance(retried, RunSnapshot)
    assert retried.attempt == 3
    polled = replace(retried, attempt=3)
    by_row = diff_run(WATCH, waiting, retried, observed_at=NOW)
    by_poll = diff_run(WATCH, waiting, polled, observed_at=NOW)
    assert [e.event_id for e in by_row] == [e.event_id for e in by_poll]
    assert [e.kind.value for e in by_row] == ["run.retrying"]


def test_attempts_are_counted_from_every_status_a_batch_set() -> None:
    assert attempts_started(("PENDING", "DEQUEUED", "EXECUTING")) == 1
    assert attempts_started(("EXECUTING", "RETRYING_AFTER_FAILURE", "EXECUTING")) == 1
    assert attempts_started(("EXECUTING", "WAITING_TO_RESUME", "EXECUTING")) == 0  # a resume
    assert (
        attempts_started(
            (
                "EXECUTING",
                "RETRYING_AFTER_FAILURE",
                "EXECUTING",
                "RETRYING_AFTER_FAILURE",
                "EXECUTING",
            )
        )
        == 2
    )
    assert attempts_started(()) is None
    assert attempts_started((None, "EXECUTING")) is None  # new to the feed: cannot tell


def test_a_row_that_only_moved_in_time_is_applied_and_a_still_one_is_nothing() -> None:
    later = verdict("EXECUTING")
    assert isinstance(later, RunSnapshot)
    assert later.updated_at == LATER
    assert verdict("EXECUTING", updated_at=SEEN.updated_at) == "same"


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "RUNNING_SOMEHOW"},  # a status the watcher does not know
        {"status": "FAILED", "internal": "COMPLETED_WITH_ERRORS", "error_readable": False},
        {"status": "EXECUTING", "complete": False},  # a column the schema promised is missing
        {"status": "EXECUTING", "updated_at": None},
        {"status": "EXECUTING", "trail": ()},  # a snapshot row that moved
        {"status": "EXECUTING", "trail": (None, "EXECUTING")},  # new to the feed
        {"status": "WAITING", "healthy": False},  # the last poll failed: a poll says so
    ],
)
def test_what_a_row_cannot_tell_is_polled(changes: dict[str, Any]) -> None:
    status = changes.pop("status")
    assert verdict(status, **changes) == "poll"


def test_an_attempt_the_watch_cannot_number_is_polled_to_number_it() -> None:
    unnumbered = replace(SEEN, attempt=None)
    trail = ("RETRYING_AFTER_FAILURE", "EXECUTING")
    assert verdict("EXECUTING", known=unnumbered, trail=trail) == "number"
    polled = replace(SEEN, attempt=5, updated_at=LATER)
    assert numbered(unnumbered, polled, 1).attempt == 4  # the poll reads the retry as 5
    # A first attempt starting before the watch knows the version: read for the version.
    queued = replace(SEEN, status="QUEUED", attempt=0, version=None)
    assert verdict("EXECUTING", known=queued, trail=("PENDING", "EXECUTING")) == "poll"
    # A server that sends attemptNumber numbers it.
    told = verdict("EXECUTING", known=unnumbered, trail=trail, attempt=4)
    assert isinstance(told, RunSnapshot)
    assert told.attempt == 4


def test_a_run_not_seen_yet_takes_its_row_as_its_baseline() -> None:
    queued = read_row(None, row("QUEUED", "PENDING", started_at=None), environment="prod")
    assert isinstance(queued, RunSnapshot)
    assert (queued.status, queued.attempt, queued.environment) == ("QUEUED", 0, "prod")
    running = read_row(None, row("EXECUTING"))
    assert isinstance(running, RunSnapshot)
    assert running.attempt is None
    assert read_row(None, row("EXECUTING", complete=False)) == "poll"


def test_a_delay_is_dropped_once_the_run_leaves_it() -> None:
    until = datetime(2026, 12, 2, 8, tzinfo=UTC)
    delayed = replace(SEEN, status="DELAYED", delayed_until=until, attempt=0)
    queued = verdict("QUEUED", "PENDING", known=delayed, trail=("DELAYED", "PENDING"))
    assert isinstance(queued, RunSnapshot)
    assert queued.delayed_until is None


def test_a_snapshot_row_that_moved_in_any_way_is_polled() -> None:
    def snap(status: str, internal: str, at: str | None = LATER, known: Any = SEEN) -> bool:
        return moved(known, row(status, internal, updated_at=at))

    assert not snap("EXECUTING", "EXECUTING", SEEN.updated_at)  # as the watch saw it
    assert snap("EXECUTING", "EXECUTING")  # same status, another time: polled
    assert snap("WAITING", "WAITING_TO_RESUME", SEEN.updated_at)
    assert snap("EXECUTING", "RETRYING_AFTER_FAILURE", SEEN.updated_at)
    assert snap("EXECUTING", "EXECUTING", known=None)  # no baseline


def test_a_row_error_reads_as_the_retrieve_presents_it() -> None:
    base = {
        "friendlyId": "run_a",
        "status": "COMPLETED_WITH_ERRORS",
        "updatedAt": "2026-12-02 07:00:05",
        "createdAt": "2026-12-02 06:58:00",
        "taskIdentifier": "sync",
        "runTags": ["b", "a"],
        "startedAt": "2026-12-02 06:59:00",
        "completedAt": "2026-12-02 07:00:05",
        "delayUntil": None,
    }

    def error(value: object) -> tuple[str | None, bool]:
        parsed = run_of_row({**base, "error": value})
        assert parsed is not None
        return parsed.error_message, parsed.error_readable

    built_in = {"type": "BUILT_IN_ERROR", "name": "Error", "message": "boom", "stackTrace": "s"}
    assert error(built_in) == ("boom", True)
    assert error({**built_in, "name": "TypeError"}) == ("TypeError: boom", True)
    assert error({"type": "STRING_ERROR", "raw": "plain"}) == ("plain", True)
    assert error({"type": "CUSTOM_ERROR", "raw": '{"code":7}'}) == ('{"code":7}', True)
    # Reworded by the API on the way out: read from it.
    assert error({**built_in, "name": "UnexpectedExitError"}) == (None, False)
    assert error({"type": "INTERNAL_ERROR", "code": "TASK_RUN_CRASHED"}) == (None, False)
    assert error(None) == (None, True)
    whole = run_of_row({**base, "error": built_in})
    assert whole is not None
    assert whole.complete
    assert whole.tags == ("a", "b")  # as the API lists them
    assert (whole.started_at, whole.finished_at) == (
        "2026-12-02T06:59:00.000Z",
        "2026-12-02T07:00:05.000Z",
    )
    partial = run_of_row({k: v for k, v in base.items() if k != "completedAt"})
    assert partial is not None
    assert not partial.complete
