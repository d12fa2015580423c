"""What the clock alone says about a run: ``stuck_after`` and its deadlines. Sans-I/O.

Both a poll's step and a tick (a look at the clock with no request, for a run the
realtime feed reports) read the same function, so a deadline falls due at the same
moment however the run is watched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from watcher.core.deadlines import RunDeadlines, check_deadlines, deadline_event
from watcher.core.diff import link
from watcher.core.events import Event, EventKind, WatchRef, freeze, make_event_id
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Severity, classify

__all__ = ["Timers", "run_timers", "stuck_event"]


@dataclass(frozen=True, slots=True)
class Timers:
    """The events the clock raised, what is now reported, and when to look again."""

    events: tuple[Event, ...]
    stuck_reported: bool
    deadlines_reported: frozenset[str]
    check_in: float | None
    """Seconds until the next stuck or deadline check falls due (``None``: none)."""


def stuck_event(
    watch: WatchRef,
    run: RunSnapshot,
    since: datetime,
    now: datetime,
    stuck_after: float | None,
    url_template: str | None,
) -> Event:
    """The ``run.stuck`` event of a run in one status since ``since``."""
    stuck_for = (now - since).total_seconds()
    return Event(
        event_id=make_event_id(
            watch.key, run.run_id, EventKind.RUN_STUCK, run.status, since.isoformat()
        ),
        kind=EventKind.RUN_STUCK,
        severity=Severity.WARNING,
        source=run.source,
        watch=watch,
        subject_id=run.run_id,
        from_status=run.status,
        to_status=run.status,
        observed_at=now,
        details=freeze(
            {
                "since": since.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "stuck_seconds": round(stuck_for, 3),
                "stuck_after_seconds": stuck_after,
                **({"task": run.task} if run.task else {}),
            }
        ),
        url=link(url_template, run.run_id),
    )


def run_timers(
    watch: WatchRef,
    run: RunSnapshot,
    *,
    now: datetime,
    since: datetime,
    stuck_after: float | None,
    stuck_reported: bool,
    deadlines: RunDeadlines | None,
    queued_since: datetime | None,
    deadlines_reported: frozenset[str],
    url_template: str | None = None,
) -> Timers:
    """Check ``run`` against ``stuck_after`` (in its status since ``since``) and its
    deadlines at ``now``; each is reported once."""
    events: list[Event] = []
    check_in: float | None = None
    terminal = classify(run.source, run.status).terminal
    if stuck_after is not None and not terminal and not stuck_reported:
        left = since.timestamp() + stuck_after - now.timestamp()
        if left <= 0:
            events.append(stuck_event(watch, run, since, now, stuck_after, url_template))
            stuck_reported = True
        else:
            check_in = left
    reported = deadlines_reported
    if deadlines:
        check = check_deadlines(
            deadlines,
            run,
            queued_since=queued_since,
            status_since=since,
            reported=deadlines_reported,
            now=now,
        )
        events += [deadline_event(watch, run, m, now, url_template) for m in check.missed]
        reported = check.reported
        if check.next_in is not None and (check_in is None or check.next_in < check_in):
            check_in = check.next_in
    return Timers(tuple(events), stuck_reported, reported, check_in)
