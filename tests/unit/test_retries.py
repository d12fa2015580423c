"""Trigger.dev retries as the API really shows them: one ``run.retrying`` per retried attempt.

Under ``2025-07-16`` a retry is ``EXECUTING`` -> ``EXECUTING`` with ``attemptCount``
rising; under the legacy set it reads ``REATTEMPTING`` first. Either way one retry is
one event, with the same id, and a final failure is a status change, never a retry.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core.diff import diff_run, retry_attempt
from watcher.core.events import Event, EventKind, WatchRef, WatchType
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import TRIGGER_CURRENT_API_VERSION, Severity, Source
from watcher.simulator.trigger_runs import TRun
from watcher.sources.trigger_models import parse_run

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
WATCH = WatchRef(WatchType.TRIGGER_RUN, "run_abc", "send-invoice")


def snap(status: str, attempt: int | None, minute: int) -> RunSnapshot:
    return RunSnapshot(
        Source.TRIGGER,
        "run_abc",
        status,
        updated_at=f"2026-12-02T09:{minute:02d}:00.000Z",
        attempt=attempt,
    )


def events(*snapshots: RunSnapshot) -> list[Event]:
    out: list[Event] = []
    for previous, current in itertools.pairwise(snapshots):
        out += diff_run(WATCH, previous, current, observed_at=NOW)
    return out


def test_a_rising_attempt_count_is_one_retry_under_the_current_version() -> None:
    (event,) = events(snap("EXECUTING", 1, 1), snap("EXECUTING", 1, 2), snap("EXECUTING", 2, 3))
    assert event.kind is EventKind.RUN_RETRYING
    assert event.severity is Severity.WARNING
    assert (event.from_status, event.to_status) == ("EXECUTING", "EXECUTING")
    assert event.details["attempt"] == 2
    assert event.details["previous_attempt"] == 1


def test_a_legacy_reattempting_is_the_same_retry_with_the_same_id() -> None:
    current = events(snap("EXECUTING", 1, 1), snap("EXECUTING", 2, 3))
    legacy = events(snap("EXECUTING", 1, 1), snap("REATTEMPTING", 1, 2), snap("EXECUTING", 2, 3))
    assert [e.kind for e in legacy] == [EventKind.RUN_RETRYING, EventKind.RUN_STATUS_CHANGED]
    assert legacy[0].event_id == current[0].event_id
    assert legacy[0].details["attempt"] == 2
    assert legacy[1].severity is Severity.INFO  # the retry was already told


def test_the_final_failure_is_a_status_change_not_a_retry() -> None:
    (event,) = events(snap("EXECUTING", 1, 1), snap("FAILED", 3, 5))
    assert event.kind is EventKind.RUN_STATUS_CHANGED
    assert event.severity is Severity.FAILURE
    assert event.details["attempt"] == 3


def test_starting_the_first_attempt_is_no_retry() -> None:
    (event,) = events(snap("QUEUED", 0, 1), snap("EXECUTING", 1, 2))
    assert event.kind is EventKind.RUN_STATUS_CHANGED
    assert retry_attempt(snap("WAITING", 1, 1), snap("EXECUTING", 1, 2)) is None


def test_a_retry_seen_late_is_still_one_retry_of_the_attempt_reached() -> None:
    (event,) = events(snap("QUEUED", 0, 1), snap("EXECUTING", 3, 9))
    assert event.kind is EventKind.RUN_RETRYING
    assert event.details["attempt"] == 3


def test_reattempting_without_an_attempt_count_is_still_a_retry() -> None:
    (event,) = events(snap("EXECUTING", None, 1), snap("REATTEMPTING", None, 2))
    assert event.kind is EventKind.RUN_RETRYING
    assert "attempt" not in event.details
    again = events(snap("EXECUTING", None, 1), snap("REATTEMPTING", None, 2))
    assert again[0].event_id == event.event_id


# -- the simulator's run, read through the parser, diffed by the core ---------------------

MOVES = st.lists(
    st.sampled_from(["EXECUTING", "RETRY", "WAITING_TO_RESUME", "DEQUEUED", "PENDING"]),
    max_size=12,
)


def trace(moves: list[str], end: str) -> list[TRun]:
    """The states a run goes through: ``RETRY`` is a failed attempt followed by the next."""
    start = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    run = TRun("run_abc", "send-invoice", "PENDING", "2026-12-02T09:00:00.000Z", "x")
    states: list[TRun] = []
    for index, move in enumerate([*moves, end]):
        stamp = (start + timedelta(seconds=index)).isoformat(timespec="milliseconds")
        if move == "RETRY":
            if run.state != "EXECUTING":
                continue
            run.move("RETRYING_AFTER_FAILURE", "timed out", stamp.replace("+00:00", "Z"))
            states.append(_copy(run))
            move = "EXECUTING"
        run.move(move, "boom", stamp.replace("+00:00", "Z"))
        states.append(_copy(run))
    return states


def _copy(run: TRun) -> TRun:
    return TRun(**{**run.__dict__, "tags": list(run.tags)})


def observed(states: list[TRun], version: str | None) -> list[Event]:
    snapshots = [
        parse_run(json.dumps(s.present(version, detail=True)).encode(), "GET") for s in states
    ]
    return events(*snapshots)


@settings(max_examples=200)
@given(MOVES, st.sampled_from(["COMPLETED", "FAILED", "CRASHED", "EXECUTING"]))
def test_both_api_versions_report_the_same_retries(moves: list[str], end: str) -> None:
    states = trace(moves, end)
    current = observed(states, TRIGGER_CURRENT_API_VERSION)
    legacy = observed(states, None)

    def retries(evs: list[Event]) -> list[str]:
        return [e.event_id for e in evs if e.kind is EventKind.RUN_RETRYING]

    assert retries(current) == retries(legacy)
    assert len(set(retries(current))) == len(retries(current))  # one event per retry
    # Seen at every state, each attempt after the first is reported once, in order.
    attempts = [e.details["attempt"] for e in current if e.kind is EventKind.RUN_RETRYING]
    assert attempts == list(range(2, states[-1].attempt + 1))


@settings(max_examples=200)
@given(MOVES, st.data())
def test_a_poller_that_misses_states_never_repeats_a_retry(
    moves: list[str], data: st.DataObject
) -> None:
    states = trace(moves, "FAILED")
    seen = sorted(data.draw(st.sets(st.integers(0, len(states) - 1))) | {len(states) - 1})
    polled = observed([states[i] for i in seen], TRIGGER_CURRENT_API_VERSION)
    retries = [e.event_id for e in polled if e.kind is EventKind.RUN_RETRYING]
    assert len(set(retries)) == len(retries)
    if polled:
        assert polled[-1].kind is EventKind.RUN_STATUS_CHANGED
        assert polled[-1].to_status == "FAILED"
