"""Conditions: bad states that last, derived from the event stream. Sans-I/O.

Some events open a condition that stays bad until another event closes it:

==================  ===============================  ==============================
condition           opened by                        closed by
==================  ===============================  ==============================
watch.problem       ``watch.error``                  ``watch.recovered``
run.action_required a run entering ``action_required`` the run's next status change
run.stuck           ``run.stuck``                    the run's next status change
run.deadline_missed ``run.deadline_missed``          ``queued``: the run leaving the
                                                     queue; ``running``, ``total``: the
                                                     run finishing (with its outcome)
runs.absent         ``runs.absent``                  a run of the watch reaching the
                                                     expected status
group.failing       ``group.runs_failed`` (or an     ``group.finished``
                    unnamed failure in the counts)
==================  ===============================  ==============================

While a condition is open, routes with ``repeat_interval`` remind people of it;
when it closes, routes with ``send_resolved`` say so. A failing group that
finishes is not "resolved": its ``group.finished`` message says how it ended.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from watcher.core.deadlines import is_queued
from watcher.core.events import Event, EventKind, freeze, make_event_id
from watcher.core.statuses import ParallelStatus, Severity, classify

__all__ = [
    "Ack",
    "Condition",
    "ConditionBook",
    "ConditionKind",
    "Moment",
    "reminder_event",
    "rfc3339_seconds",
]

TIMELINE_MAX = 50
"""Timeline entries an incident keeps: the first, and the latest others."""
TIMELINE_FEEDS = 5
"""Events feeding an open condition that its timeline lists (later ones are counted)."""


class ConditionKind(StrEnum):
    """The lasting bad states the watcher tracks."""

    WATCH_PROBLEM = "watch.problem"
    ACTION_REQUIRED = "run.action_required"
    RUN_STUCK = "run.stuck"
    RUN_DEADLINE = "run.deadline_missed"
    RUNS_ABSENT = "runs.absent"
    GROUP_FAILING = "group.failing"

    @property
    def resolvable(self) -> bool:
        """Whether its end is news worth a resolved message."""
        return self is not ConditionKind.GROUP_FAILING


@dataclass(frozen=True, slots=True)
class Ack:
    """Who acknowledged an incident, when, and what they said."""

    by: str
    at: datetime
    note: str | None = None

    def as_dict(self, stamp: Callable[[datetime], str]) -> dict[str, Any]:
        """JSON-ready, times written by ``stamp`` (the state file's, or a view's)."""
        return {"by": self.by, "at": stamp(self.at), "note": self.note}


@dataclass(frozen=True, slots=True)
class Moment:
    """One entry of an incident's timeline."""

    at: datetime
    what: str
    """``opened``, ``event``, ``reminder``, ``acknowledged``, ``unacknowledged``,
    ``escalated``, ``flapping``, ``resolved``."""
    text: str = ""
    event_id: str | None = None

    def as_dict(self, stamp: Callable[[datetime], str]) -> dict[str, Any]:
        """JSON-ready, times written by ``stamp``."""
        return {
            "at": stamp(self.at),
            "what": self.what,
            "text": self.text,
            "event_id": self.event_id,
        }


@dataclass(frozen=True, slots=True)
class Condition:
    """An open condition: the event that opened it, the latest that fed it, and its
    life as an incident (acknowledgement, escalation tiers reached, the notifiers
    engaged in it, its timeline)."""

    key: str
    kind: ConditionKind
    opened: Event
    latest: Event
    count: int = 1
    ack: Ack | None = None
    escalated: frozenset[str] = frozenset()
    """The escalation tiers sent, as ``route-id#index``."""
    engaged: tuple[str, ...] = ()
    """Ids of the notifiers that were told it opened (they hear of its acknowledgement
    and its end)."""
    timeline: tuple[Moment, ...] = ()

    @property
    def since(self) -> datetime:
        """When it was first observed."""
        return self.opened.observed_at

    def noted(self, moment: Moment) -> Condition:
        """This condition with ``moment`` on its timeline (bounded: the first entry stays)."""
        timeline = (*self.timeline, moment)
        if len(timeline) > TIMELINE_MAX:
            timeline = (timeline[0], *timeline[-(TIMELINE_MAX - 1) :])
        return replace(self, timeline=timeline)


def rfc3339_seconds(moment: datetime) -> str:
    """``2026-11-22T10:00:00Z``: what messages and incident views show."""
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _opens(event: Event) -> tuple[str, ConditionKind] | None:
    watch = event.watch.key
    match event.kind:
        case EventKind.WATCH_ERROR:
            return f"{watch}#watch", ConditionKind.WATCH_PROBLEM
        case EventKind.RUN_STATUS_CHANGED if event.to_status == ParallelStatus.ACTION_REQUIRED:
            return f"{watch}#{event.subject_id}#action_required", ConditionKind.ACTION_REQUIRED
        case EventKind.RUN_STUCK:
            return f"{watch}#{event.subject_id}#stuck", ConditionKind.RUN_STUCK
        case EventKind.RUNS_ABSENT:
            status = event.details.get("expected_status")
            return f"{watch}#absent:{status}", ConditionKind.RUNS_ABSENT
        case EventKind.RUN_DEADLINE_MISSED:
            deadline = event.details.get("deadline")
            return f"{watch}#{event.subject_id}#deadline:{deadline}", ConditionKind.RUN_DEADLINE
        case EventKind.GROUP_RUNS_FAILED:
            group = str(event.details.get("group_id", event.watch.id))
            return f"{watch}#{group}#failing", ConditionKind.GROUP_FAILING
        case EventKind.GROUP_COUNTS_CHANGED if (
            event.severity is Severity.FAILURE and event.to_status == "active"
        ):
            return f"{watch}#{event.subject_id}#failing", ConditionKind.GROUP_FAILING
    return None


def _closes(event: Event) -> list[str]:
    watch = event.watch.key
    match event.kind:
        case EventKind.WATCH_RECOVERED:
            return [f"{watch}#watch"]
        case EventKind.RUN_STATUS_CHANGED | EventKind.RUN_RETRYING:
            # A shared change closes what it opened under each watch that covers the run.
            watches = [watch, *(str(w["key"]) for w in event.details.get("watches", ()))]
            keys = []
            finished = classify(event.source, event.to_status).terminal
            for key in dict.fromkeys(watches):
                keys.append(f"{key}#{event.subject_id}#stuck")
                if event.to_status != ParallelStatus.ACTION_REQUIRED:
                    keys.append(f"{key}#{event.subject_id}#action_required")
                if not is_queued(event.to_status):
                    keys.append(f"{key}#{event.subject_id}#deadline:queued")
                if finished:
                    keys.append(f"{key}#{event.subject_id}#deadline:running")
                    keys.append(f"{key}#{event.subject_id}#deadline:total")
                # The run an expectation waited for (a trigger_runs watch's own run).
                keys.append(f"{key}#absent:{event.to_status}")
            return keys
        case EventKind.GROUP_FINISHED:
            return [f"{watch}#{event.subject_id}#failing"]
    return []


class ConditionBook:
    """The open conditions, fed one event at a time."""

    def __init__(self) -> None:
        self.open: dict[str, Condition] = {}
        self.last_touched: str | None = None
        """The condition the last observed event opened or fed, if any."""

    def observe(self, event: Event) -> list[tuple[Condition, Event]]:
        """Account for ``event``; return the conditions it closed, with their resolved event.

        Every closed condition is returned (its incident ends); whether its resolved
        event is news for routes is :attr:`ConditionKind.resolvable`.
        """
        closed: list[tuple[Condition, Event]] = []
        for key in _closes(event):
            condition = self.open.pop(key, None)
            if condition is not None:
                closed.append((condition, resolved_event(condition, event)))
        opened = _opens(event)
        self.last_touched = opened[0] if opened is not None else None
        if opened is not None:
            key, kind = opened
            current = self.open.get(key)
            moment = Moment(event.observed_at, "event", event.to_status, event.event_id)
            if current is None:
                first = replace(moment, what="opened")
                self.open[key] = Condition(key, kind, event, event, timeline=(first,))
            else:
                fed = replace(current, latest=event, count=current.count + 1)
                # A storm feeds one condition thousands of times: the first few go on
                # the timeline, the count tells the rest (and keeps each write small).
                self.open[key] = fed.noted(moment) if current.count < TIMELINE_FEEDS else fed
        return closed

    def forget_watch(self, watch_key: str) -> None:
        """Drop the conditions of a watch that is no longer watched."""
        for key in [k for k in self.open if k.split("#", 1)[0] == watch_key]:
            del self.open[key]


def resolved_event(condition: Condition, closing: Event) -> Event:
    """The resolved message of a condition closed by ``closing``."""
    opened = condition.opened
    duration = (closing.observed_at - condition.since).total_seconds()
    return Event(
        event_id=make_event_id(opened.event_id, "resolved"),
        kind=EventKind.CONDITION_RESOLVED,
        severity=Severity.SUCCESS,
        source=opened.source,
        watch=opened.watch,
        subject_id=opened.subject_id,
        from_status=condition.latest.to_status,
        to_status="resolved",
        observed_at=closing.observed_at,
        details=freeze(
            {
                "condition": condition.kind.value,
                "since": rfc3339_seconds(condition.since),
                "duration_seconds": round(max(0.0, duration), 3),
                "opened_event_id": opened.event_id,
                "resolved_by": closing.event_id,
                "now": closing.to_status,
            }
        ),
        url=opened.url,
        cause=opened,
    )


def reminder_event(condition: Condition, now: datetime, number: int) -> Event:
    """The ``number``-th reminder that ``condition`` is still open at ``now``."""
    opened, latest = condition.opened, condition.latest
    return Event(
        event_id=make_event_id(opened.event_id, "reminder", number),
        kind=EventKind.CONDITION_REMINDER,
        severity=min(opened.severity, latest.severity, key=list(Severity).index),
        source=opened.source,
        watch=opened.watch,
        subject_id=opened.subject_id,
        from_status=opened.from_status,
        to_status=latest.to_status,
        observed_at=now,
        details=freeze(
            {
                "condition": condition.kind.value,
                "since": rfc3339_seconds(condition.since),
                "open_seconds": round(max(0.0, (now - condition.since).total_seconds()), 3),
                "reminder": number,
                "events": condition.count,
                "opened_event_id": opened.event_id,
                "latest": dict(latest.details),
            }
        ),
        url=opened.url,
        cause=opened,
    )
