"""What a realtime row says of a run its watch already knows: apply it, or poll.

Trigger.dev's realtime rows carry the run's status and ``updatedAt`` but not what an
alert about an outcome needs (the error, the attempt, the version that ran): those
come from ``GET /api/v3/runs/{id}``, which spends the environment's ``/api`` budget.
Most changes of a long-lived run need none of it: a run going from ``EXECUTING`` to
``WAITING`` and back is the same attempt on the same version. :func:`read_row` applies
such a row directly, a snapshot built from the last poll's, so the event is the one
polling would make (same ``event_id``: status and ``updatedAt`` are the row's), and
polls where the row cannot tell the whole story:

- a terminal status (the alert needs the error and the finish);
- a retry (``RETRYING_AFTER_FAILURE`` now, anywhere in the batch, or where the run
  stood before it): the poll reads the attempt, so the retry is named by it as
  polling names it. The attempt count rises only when the next attempt starts, so
  the row that leaves ``RETRYING_AFTER_FAILURE`` is polled too;
- a run entering ``EXECUTING`` from a queue (a new attempt may start there, and the
  version is locked then);
- a batch that set more than one status (something came and went between two reads);
- a status the watcher does not know, a watch with no baseline, or one whose last
  poll failed (a poll reports the problem, or its end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import classify

__all__ = ["RETRYING", "Verdict", "moved", "read_row"]

RETRYING = "RETRYING_AFTER_FAILURE"
"""The internal status of a run between a failed attempt and the next."""

_QUEUES = frozenset({"QUEUED", "DEQUEUED", "PENDING_VERSION", "DELAYED"})
"""Public statuses a run leaves for ``EXECUTING`` by starting an attempt."""

Verdict = RunSnapshot | Literal["poll", "same"]
"""A snapshot to apply as a poll's result, ``poll`` the run, or ``same`` (nothing new)."""


def read_row(
    known: RunSnapshot | None,
    *,
    status: str,
    internal: str,
    updated_at: str | None,
    trail: Sequence[object] = (),
    healthy: bool = True,
) -> Verdict:
    """What a row (at its latest) means for a run last seen as ``known``; ``trail`` is
    the row's internal status before its batch, then each one the batch set."""
    if known is None or not healthy:
        return "poll"
    if updated_at is None or updated_at == known.updated_at:
        return "same" if status == known.status else "poll"
    if internal == RETRYING or RETRYING in trail or len(set(trail[1:])) > 1:
        return "poll"
    info = classify(known.source, status)
    if not info.known or info.terminal:
        return "poll"
    if status == "EXECUTING" and known.status in _QUEUES:
        return "poll"
    return replace(
        known,
        status=status,
        updated_at=updated_at,
        delayed_until=known.delayed_until if status == "DELAYED" else None,
    )


def moved(known: RunSnapshot | None, *, status: str, internal: str, updated_at: str | None) -> bool:
    """Whether a snapshot row shows a change the watch has not seen (so its run is
    polled): another status, a retry, or the same status at another time (a retry
    between two reads shows ``EXECUTING`` both sides). A snapshot shows where a run
    stands, not what it passed through, so no change of it is applied directly."""
    if known is None:
        return True
    return (
        status != known.status
        or internal == RETRYING
        or (updated_at is not None and updated_at != known.updated_at)
    )
