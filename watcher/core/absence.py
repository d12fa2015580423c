"""Expected runs: alert on a run that did not happen. Sans-I/O.

A ``trigger_runs`` watch may say what it expects (``expect:``): a run matching its
filter that reaches ``status``

- ``every`` period: within the period (plus ``grace``) after the last such run (or
  after the watch began, when none was seen yet);
- on a cron ``schedule`` in a time zone: for each fire time *t*, a run created at or
  after *t* that reaches the status by *t* + ``grace`` (and, with ``started_within``,
  was created by *t* + ``started_within``).

When the window closes without one, ``runs.absent`` opens a condition (its key names
the expected status); the next matching run's ``run.status_changed`` closes it.
Fire times come from ``cronsim`` (Debian cron's rules: a 02:30 schedule on a
spring-forward day fires at 03:00; on a fall-back day, once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from watcher.core.conditions import rfc3339_seconds
from watcher.core.deadlines import parse_time
from watcher.core.diff import link
from watcher.core.events import Event, EventKind, WatchRef, freeze, make_event_id
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Severity, Source

__all__ = [
    "AbsenceState",
    "Expectation",
    "LastMatch",
    "check_absence",
    "fire_times",
    "schedule_error",
]


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a watch expects, in seconds and a zone."""

    status: str
    grace: float
    every: float | None = None
    schedule: str | None = None
    timezone: str = "UTC"
    started_within: float | None = None
    severity: Severity = Severity.FAILURE


@dataclass(frozen=True, slots=True)
class LastMatch:
    """The last run seen that met the expectation."""

    run_id: str
    status: str
    created_at: datetime
    finished_at: str | None = None

    def as_dict(self, url_template: str | None) -> dict[str, Any]:
        """JSON-ready, with the run's link."""
        return {
            "id": self.run_id,
            "status": self.status,
            "created_at": _stamp(self.created_at),
            "finished_at": self.finished_at,
            "url": link(url_template, self.run_id),
        }


@dataclass(frozen=True, slots=True)
class AbsenceState:
    """Where a watch's expectation stands (kept in the state file)."""

    since: datetime
    """When the watch began expecting (a window never starts before it)."""
    last: LastMatch | None = None
    reported: datetime | None = None
    """The start of the last window reported absent (each window is reported once)."""


def schedule_error(schedule: str, timezone: str) -> str | None:
    """What is wrong with a cron schedule and its zone, in words; ``None`` when valid."""
    try:
        zone = ZoneInfo(timezone)
    except (KeyError, ValueError):
        return f"unknown time zone {timezone!r} (an IANA name such as Europe/Berlin)"
    try:
        next(CronSim(schedule, datetime(2026, 1, 1, tzinfo=zone)))
    except CronSimError as exc:
        return f"invalid cron expression {schedule!r}: {exc}"
    except StopIteration:
        return f"cron expression {schedule!r} never fires"
    return None


def fire_times(schedule: str, timezone: str, start: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times after ``start``, in the schedule's zone."""
    it = CronSim(schedule, start.astimezone(ZoneInfo(timezone)))
    return [next(it) for _ in range(count)]


def _previous_fire(exp: Expectation, before: datetime) -> datetime | None:
    assert exp.schedule is not None
    zone = ZoneInfo(exp.timezone)
    try:
        return next(CronSim(exp.schedule, before.astimezone(zone), reverse=True))
    except StopIteration:
        return None


def _windows(
    exp: Expectation, state: AbsenceState, now: datetime
) -> tuple[tuple[datetime, datetime] | None, datetime]:
    """The latest window closed by ``now`` (its start and close), if any began after the
    watch did; and when the next one closes (when to look again)."""
    grace = timedelta(seconds=exp.grace)
    if exp.every is not None:
        period = timedelta(seconds=exp.every)
        start = max(state.last.created_at if state.last else state.since, state.since)
        closes = start + period + grace
        if now >= closes:
            return (start, closes), now + period
        return None, closes
    assert exp.schedule is not None
    latest = _previous_fire(exp, now)
    if latest is None:  # pragma: no cover - a schedule that fired never yet
        upcoming = fire_times(exp.schedule, exp.timezone, now, 1)[0]
        return None, upcoming + grace
    if now >= latest + grace:
        upcoming = fire_times(exp.schedule, exp.timezone, now, 1)[0]
        closed = (latest, latest + grace) if latest >= state.since else None
        return closed, upcoming + grace
    # The latest window is still open; the one before it has closed.
    before = _previous_fire(exp, latest - timedelta(seconds=1))
    closed = (before, before + grace) if before is not None and before >= state.since else None
    return closed, latest + grace


def _meets(exp: Expectation, status: str, created: datetime, start: datetime) -> bool:
    """Whether a run that reached ``status``, created at ``created``, meets the window
    that began at ``start``."""
    if status != exp.status:
        return False
    if exp.every is not None:
        return created > start  # the window starts at the last match: a new one
    if created < start:
        return False
    return exp.started_within is None or created <= start + timedelta(seconds=exp.started_within)


def check_absence(
    exp: Expectation,
    state: AbsenceState,
    runs: Iterable[RunSnapshot],
    now: datetime,
    *,
    watch: WatchRef,
    url_template: str | None = None,
) -> tuple[AbsenceState, tuple[Event, ...], float]:
    """Account for the ``runs`` a listing showed; report a window that closed without a
    matching run, once. Returns the new state, the events, and the seconds until the
    next window closes (when to look again)."""
    listed: list[tuple[RunSnapshot, datetime]] = []
    for run in runs:
        created = parse_time(run.created_at)
        if created is not None:
            listed.append((run, created))
    closed, next_close = _windows(exp, state, now)
    events: tuple[Event, ...] = ()
    if closed is not None and state.reported != closed[0]:
        start, closes = closed
        met = any(_meets(exp, run.status, created, start) for run, created in listed) or (
            state.last is not None and _meets(exp, state.last.status, state.last.created_at, start)
        )
        if not met:
            seen = Counter(run.status for run, created in listed if created >= start)
            events = (_absent_event(exp, state, start, closes, seen, now, watch, url_template),)
            state = replace(state, reported=start)
    last = state.last
    for run, created in listed:
        if run.status == exp.status and (last is None or created > last.created_at):
            last = LastMatch(run.run_id, run.status, created, run.finished_at)
    state = replace(state, last=last)
    return state, events, max(1.0, (next_close - now).total_seconds())


def _seen_text(seen: Counter[str], status: str) -> str:
    if not seen:
        return "no run seen"
    parts = ", ".join(
        f"{n} run{'s' if n != 1 else ''} {s}" for s, n in sorted(seen.items(), key=lambda x: -x[1])
    )
    return f"{parts}, none {status}"


def _absent_event(
    exp: Expectation,
    state: AbsenceState,
    start: datetime,
    closes: datetime,
    seen: Counter[str],
    now: datetime,
    watch: WatchRef,
    url_template: str | None,
) -> Event:
    window = (
        {"every_seconds": exp.every}
        if exp.every is not None
        else {"schedule": exp.schedule, "timezone": exp.timezone}
    )
    return Event(
        event_id=make_event_id(watch.key, EventKind.RUNS_ABSENT, exp.status, start.isoformat()),
        kind=EventKind.RUNS_ABSENT,
        severity=exp.severity,
        source=Source.TRIGGER,
        watch=watch,
        subject_id=watch.id,
        from_status=state.last.status if state.last else None,
        to_status="absent",
        observed_at=now,
        details=freeze(
            {
                "expected_status": exp.status,
                "window_start": _stamp(start),
                "window_end": _stamp(closes),
                "due_at": _stamp(closes),
                "grace_seconds": exp.grace,
                **window,
                "last_match": state.last.as_dict(url_template) if state.last else None,
                "seen": dict(seen),
                "seen_text": _seen_text(seen, exp.status),
            }
        ),
    )


def _stamp(moment: datetime) -> str:
    return rfc3339_seconds(moment.astimezone(UTC))
