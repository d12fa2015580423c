from __future__ import annotations

import pytest

from watcher.core.statuses import PARALLEL_STATUSES, TRIGGER_STATUSES, Severity, Source, classify


@pytest.mark.parametrize(
    ("source", "status", "terminal", "severity"),
    [
        (Source.PARALLEL, "failed", True, Severity.FAILURE),
        (Source.PARALLEL, "completed", True, Severity.SUCCESS),
        (Source.PARALLEL, "cancelled", True, Severity.INFO),
        (Source.PARALLEL, "action_required", False, Severity.WARNING),
        (Source.PARALLEL, "running", False, Severity.INFO),
        (Source.TRIGGER, "FAILED", True, Severity.FAILURE),
        (Source.TRIGGER, "CRASHED", True, Severity.FAILURE),
        (Source.TRIGGER, "SYSTEM_FAILURE", True, Severity.FAILURE),
        (Source.TRIGGER, "TIMED_OUT", True, Severity.FAILURE),
        (Source.TRIGGER, "EXPIRED", True, Severity.FAILURE),
        (Source.TRIGGER, "INTERRUPTED", True, Severity.FAILURE),
        (Source.TRIGGER, "REATTEMPTING", False, Severity.WARNING),
        (Source.TRIGGER, "COMPLETED", True, Severity.SUCCESS),
        (Source.TRIGGER, "CANCELED", True, Severity.INFO),
        (Source.TRIGGER, "EXECUTING", False, Severity.INFO),
        (Source.TRIGGER, "DEQUEUED", False, Severity.INFO),
        (Source.TRIGGER, "WAITING", False, Severity.INFO),
    ],
)
def test_documented_statuses(
    source: Source, status: str, terminal: bool, severity: Severity
) -> None:
    info = classify(source, status)
    assert info.known
    assert info.terminal is terminal
    assert info.severity is severity


def test_both_status_sets_are_complete() -> None:
    assert {
        "queued",
        "action_required",
        "running",
        "completed",
        "failed",
        "cancelling",
        "cancelled",
    } == PARALLEL_STATUSES
    assert len(TRIGGER_STATUSES) == 17


@pytest.mark.parametrize(
    ("source", "status"),
    [(Source.PARALLEL, "paused"), (Source.TRIGGER, "HIBERNATING"), (Source.TRIGGER, "failed")],
)
def test_unknown_status_is_kept_non_terminal_and_flagged(source: Source, status: str) -> None:
    info = classify(source, status)
    assert not info.known
    assert not info.terminal
    assert info.severity is Severity.WARNING
