"""What a realtime row says of a run: the snapshot a poll would have read, or poll.

Trigger.dev's realtime rows are ``TaskRun`` columns: the internal status,
``updatedAt``, ``startedAt``, ``completedAt``, ``delayUntil``, the tags, the task and
``error`` (the run's own error, the very column ``GET /api/v3/runs/{id}`` presents).
They lack two things a retrieve has: the attempt count and the locked version
(``DEFAULT_ELECTRIC_COLUMNS`` of the provider's realtime client selects neither; a
server that sends ``attemptNumber`` or ``taskVersion`` is read). So:

- The **version** and the environment are carried from what the watch last knew (a
  run's version is locked when it first starts and never moves). A run the snapshot
  baselined has none: the feed lists such runs once after the snapshot (a page per
  100 runs), and an attempt that starts before the watch knows the version is read.
- The **attempt** is counted from the row's history: a batch's ``trail`` holds every
  internal status it set, and entering ``EXECUTING`` from anything but a pause
  starts an attempt (the first one from a queue, the next one after
  ``RETRYING_AFTER_FAILURE``), as the provider counts them. A retry is therefore
  named by its attempt exactly as polling names it, and its event has polling's id.

:func:`read_row` returns that snapshot, ``same`` (nothing new) or ``poll`` where the
row cannot tell: a status the watcher does not know, a row missing a column the
schema promised, an error the API would word differently (the provider rewrites a
few: exits by signal, out-of-memory kills, internal errors), a watch whose last poll
failed (a poll reports the problem's end), a new attempt the watch cannot number
(no attempt known yet), and a snapshot row that moved (a snapshot shows where a run
stands, not what it passed through). A run the watch has not seen yet takes the row
as its baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import pairwise
from typing import Literal

from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source, classify

__all__ = [
    "RETRYING",
    "RunRow",
    "Verdict",
    "api_time",
    "attempts_started",
    "moved",
    "numbered",
    "read_row",
]

RETRYING = "RETRYING_AFTER_FAILURE"
"""The internal status of a run between a failed attempt and the next."""

_SAME_ATTEMPT = frozenset({"EXECUTING", "PAUSED", "WAITING_TO_RESUME"})
"""Internal statuses from which ``EXECUTING`` continues the attempt (a resumed wait)."""

_NOT_STARTED = frozenset(
    {"PENDING", "DELAYED", "PENDING_VERSION", "WAITING_FOR_DEPLOY", "DEQUEUED"}
)
"""Internal statuses of a run no attempt has started for yet (without ``startedAt``)."""

Verdict = RunSnapshot | Literal["poll", "same", "number"]
"""A snapshot to apply as a poll's result, ``poll`` the run, ``same`` (nothing new), or
``number``: poll the run, whose new attempt the watch cannot number (its baseline came
from a row); :func:`numbered` gives the baseline the attempt the poll implies."""


@dataclass(frozen=True, slots=True)
class RunRow:
    """What one realtime row says of a run, in the API's terms (times as the API prints
    them, the public status beside the internal one)."""

    run_id: str
    status: str
    internal: str
    updated_at: str | None
    task: str | None = None
    tags: tuple[str, ...] = ()
    created_at: datetime | None = None
    started_at: str | None = None
    finished_at: str | None = None
    delayed_until: datetime | None = None
    error_message: str | None = None
    error_stack: str | None = None
    error_readable: bool = True
    """False when the API would present the row's error in other words (read it)."""
    complete: bool = True
    """Every column the watcher asked for is in the row."""
    attempt: int | None = None
    """``attemptNumber``, from a server that sends it."""
    version: str | None = None
    """``taskVersion``, from a server that sends it."""


def attempts_started(trail: Sequence[object]) -> int | None:
    """Attempts a batch started, from its ``trail`` (the internal status before it, then
    each one it set); None when the trail cannot tell (no status before it)."""
    if not trail or not isinstance(trail[0], str):
        return None
    started = 0
    for before, after in pairwise(trail):
        if after == "EXECUTING" and before not in _SAME_ATTEMPT:
            started += 1
    return started


def _snapshot(
    row: RunRow, known: RunSnapshot | None, attempt: int | None, environment: str | None
) -> RunSnapshot:
    """The run as a retrieve would show it now: the row's columns, the rest from ``known``."""
    return RunSnapshot(
        source=Source.TRIGGER,
        run_id=row.run_id,
        status=row.status,
        updated_at=row.updated_at,
        error_message=row.error_message,
        task=row.task or (known.task if known else None),
        tags=row.tags,
        attempt=attempt,
        delayed_until=row.delayed_until if row.status == "DELAYED" else None,
        group_id=known.group_id if known else None,
        version=row.version or (known.version if known else None),
        environment=known.environment if known and known.environment else environment,
        error_stack=row.error_stack,
        started_at=row.started_at,
        finished_at=row.finished_at,
        created_at=api_time(row.created_at) or (known.created_at if known else None),
    )


def api_time(moment: datetime | None) -> str | None:
    """A time as the API writes it (``2026-12-02T07:00:00.120Z``)."""
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _baseline_attempt(row: RunRow) -> int | None:
    if row.attempt is not None:
        return row.attempt
    if row.started_at is None and row.internal in _NOT_STARTED:
        return 0  # never started: no attempt yet, as attemptCount says
    return None


def read_row(
    known: RunSnapshot | None,
    row: RunRow,
    *,
    trail: Sequence[object] = (),
    healthy: bool = True,
    environment: str | None = None,
) -> Verdict:
    """What ``row`` (at its latest) means for a run last seen as ``known``; ``trail`` is
    the row's internal status before its batch, then each one the batch set (empty for
    a snapshot row); ``environment`` is the key's (a retrieve does not name it)."""
    if not healthy or not row.complete or not row.error_readable or row.updated_at is None:
        return "poll"
    if not classify(Source.TRIGGER, row.status).known:
        return "poll"
    if known is None:
        return _snapshot(row, None, _baseline_attempt(row), environment)
    if row.updated_at == known.updated_at:
        return "same" if row.status == known.status else "poll"
    started = attempts_started(trail)
    if started is None:
        return "poll"  # a snapshot, or a row new to the feed: where it stands, not how
    attempt = row.attempt
    if attempt is None:
        if started and known.attempt is None:
            return "number"
        attempt = known.attempt + started if known.attempt is not None else None
    if started and known.version is None and row.version is None:
        return "poll"  # the version locks when an attempt starts: the alert names it
    return _snapshot(row, known, attempt, environment)


def numbered(known: RunSnapshot, polled: RunSnapshot, started: int) -> RunSnapshot:
    """``known`` with the attempt it was on, when a poll reads ``polled`` after the feed saw
    ``started`` attempts begin: the retry is then named by its attempt, as polling names it."""
    if known.attempt is not None or polled.attempt is None or started <= 0:
        return known
    return replace(known, attempt=max(0, polled.attempt - started))


def moved(known: RunSnapshot | None, row: RunRow) -> bool:
    """Whether a row shows a change the watch has not seen: another status, a retry, or
    the same status at another time (a retry between two reads shows ``EXECUTING``
    both sides)."""
    if known is None:
        return True
    return (
        row.status != known.status
        or row.internal == RETRYING
        or (row.updated_at is not None and row.updated_at != known.updated_at)
    )
