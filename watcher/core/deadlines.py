"""Per-run deadlines: a run queued, running or alive past a limit. Sans-I/O.

A watch's ``deadlines: {queued: 10m, running: 1h, total: 2h}`` names up to three
limits, each measured from its own reference point:

========  ==========================================  ===============================
deadline  the clock runs from                          while the run is
========  ==========================================  ===============================
queued    its creation (or ``delayUntil``, when it     waiting for a worker: queued,
          was delayed), or its return to a queue       pending a version or a deploy
running   its start (``startedAt``; else when it was   started and not finished
          seen entering a running status)
total     its creation                                 not finished
========  ==========================================  ===============================

Each missed deadline is one ``run.deadline_missed`` event (its id names the run, the
deadline and the reference point, so a restart or another replica repeats nothing);
``queued`` resolves when the run leaves the queue, the others when it finishes.
``stuck_after`` is different: it measures time in any one status, whatever it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from watcher.core.diff import link
from watcher.core.events import Event, EventKind, WatchRef, freeze, make_event_id
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import ParallelStatus, Severity, TriggerStatus, classify

__all__ = [
    "DEADLINE_NAMES",
    "QUEUED_STATUSES",
    "DeadlineCheck",
    "DeadlineName",
    "Missed",
    "RunDeadlines",
    "check_deadlines",
    "deadline_event",
    "is_queued",
    "parse_time",
    "queued_clock",
]

DeadlineName = Literal["queued", "running", "total"]
DEADLINE_NAMES: tuple[DeadlineName, ...] = ("queued", "running", "total")

QUEUED_STATUSES: frozenset[str] = frozenset(
    {
        ParallelStatus.QUEUED,
        TriggerStatus.PENDING_VERSION,
        TriggerStatus.QUEUED,
        TriggerStatus.DEQUEUED,
        TriggerStatus.WAITING_FOR_DEPLOY,
    }
)
"""Waiting for a worker. ``DELAYED`` is not among them: the run waits on purpose (its
queued clock starts at ``delayUntil``)."""


@dataclass(frozen=True, slots=True)
class RunDeadlines:
    """A watch's limits, in seconds (``None``: no such deadline)."""

    queued: float | None = None
    running: float | None = None
    total: float | None = None

    def limit(self, name: DeadlineName) -> float | None:
        """The limit named ``name``."""
        match name:
            case "queued":
                return self.queued
            case "running":
                return self.running
            case "total":
                return self.total

    def __bool__(self) -> bool:
        return any(self.limit(name) is not None for name in DEADLINE_NAMES)


@dataclass(frozen=True, slots=True)
class Missed:
    """One deadline a run missed: which, its limit, when its clock started."""

    name: DeadlineName
    limit: float
    since: datetime
    reference: str
    """What the clock runs from, in words: ``created``, ``queued``, ``started``,
    ``seen running``."""

    @property
    def due_at(self) -> datetime:
        """When it was missed."""
        return datetime.fromtimestamp(self.since.timestamp() + self.limit, self.since.tzinfo)

    @property
    def token(self) -> str:
        """What a watch remembers once it reported this deadline (for this clock)."""
        return f"{self.name}@{self.since.isoformat()}"


def parse_time(stamp: str | None) -> datetime | None:
    """An RFC 3339 time of the provider as an aware datetime; ``None`` when unreadable."""
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def is_queued(status: str) -> bool:
    """Whether ``status`` waits for a worker."""
    return status in QUEUED_STATUSES


def queued_clock(
    run: RunSnapshot,
    previous: RunSnapshot | None,
    queued_since: datetime | None,
    observed_at: datetime,
) -> datetime | None:
    """When ``run``'s time in the queue began: kept across queued statuses (``QUEUED``
    to ``DEQUEUED``); a run first seen queued has waited since its creation (or its
    ``delayUntil``); one seen entering a queue (from ``DELAYED``, or back from running)
    since then. ``None`` while it is not queued."""
    if not is_queued(run.status):
        return None
    if previous is not None and is_queued(previous.status) and queued_since is not None:
        return queued_since
    if previous is None and parse_time(run.started_at) is None:
        created = parse_time(run.created_at)
        delayed = run.delayed_until
        if created is not None:
            return max(created, delayed) if delayed is not None else min(created, observed_at)
    return observed_at


def _clocks(
    run: RunSnapshot, queued_since: datetime | None, status_since: datetime | None
) -> Iterable[tuple[DeadlineName, datetime, str]]:
    """Each deadline's reference point that applies to ``run`` now."""
    if classify(run.source, run.status).terminal:
        return
    created = parse_time(run.created_at)
    if is_queued(run.status):
        if queued_since is not None:
            yield "queued", queued_since, "queued"
    elif run.status != TriggerStatus.DELAYED:
        started = parse_time(run.started_at)
        if started is not None:
            yield "running", started, "started"
        elif status_since is not None:
            yield "running", status_since, "seen running"
    if created is not None:
        yield "total", created, "created"


@dataclass(frozen=True, slots=True)
class DeadlineCheck:
    """What one look at the clock found: the deadlines missed now, what stays reported
    (the tokens of the clocks still running), and the seconds to the next due one."""

    missed: tuple[Missed, ...]
    reported: frozenset[str]
    next_in: float | None


def check_deadlines(
    deadlines: RunDeadlines,
    run: RunSnapshot,
    *,
    queued_since: datetime | None,
    status_since: datetime | None,
    reported: frozenset[str],
    now: datetime,
) -> DeadlineCheck:
    """The deadlines ``run`` has missed by ``now`` and that were not reported yet."""
    missed: list[Missed] = []
    kept: set[str] = set()
    soonest: float | None = None
    for name, since, reference in _clocks(run, queued_since, status_since):
        limit = deadlines.limit(name)
        if limit is None:
            continue
        found = Missed(name, limit, since, reference)
        if found.token in reported:
            kept.add(found.token)
            continue
        left = (found.due_at - now).total_seconds()
        if left <= 0:
            missed.append(found)
            kept.add(found.token)
        elif soonest is None or left < soonest:
            soonest = left
    return DeadlineCheck(tuple(missed), frozenset(kept), soonest)


def deadline_event(
    watch: WatchRef,
    run: RunSnapshot,
    missed: Missed,
    now: datetime,
    url_template: str | None = None,
) -> Event:
    """The ``run.deadline_missed`` event of ``missed``."""
    elapsed = (now - missed.since).total_seconds()
    return Event(
        event_id=make_event_id(
            watch.key, run.run_id, EventKind.RUN_DEADLINE_MISSED, missed.name, missed.token
        ),
        kind=EventKind.RUN_DEADLINE_MISSED,
        severity=Severity.WARNING if missed.name == "queued" else Severity.FAILURE,
        source=run.source,
        watch=watch,
        subject_id=run.run_id,
        from_status=run.status,
        to_status=run.status,
        observed_at=now,
        details=freeze(
            {
                "deadline": missed.name,
                "limit_seconds": missed.limit,
                "reference": missed.reference,
                "since": _stamp(missed.since),
                "due_at": _stamp(missed.due_at),
                "elapsed_seconds": round(elapsed, 3),
                "status": run.status,
                **({"task": run.task} if run.task else {}),
            }
        ),
        url=link(url_template, run.run_id),
    )


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
