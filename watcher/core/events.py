"""Events: what the watcher tells people about, and their deterministic ids."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, assert_never

from watcher.core.statuses import Severity, Source

__all__ = [
    "Event",
    "EventKind",
    "WatchRef",
    "WatchType",
    "freeze",
    "make_event_id",
]


class WatchType(StrEnum):
    """The kinds of thing a watch can follow."""

    PARALLEL_TASK_GROUP = "parallel_task_group"
    PARALLEL_TASK_RUN = "parallel_task_run"
    TRIGGER_RUN = "trigger_run"
    TRIGGER_RUNS = "trigger_runs"
    WATCHER = "watcher"
    """Not configurable: the identity of the daemon's own events (``notifier.failed``)."""

    @property
    def source(self) -> Source:
        """The upstream API this watch type talks to."""
        match self:
            case WatchType.PARALLEL_TASK_GROUP | WatchType.PARALLEL_TASK_RUN:
                return Source.PARALLEL
            case WatchType.TRIGGER_RUN | WatchType.TRIGGER_RUNS:
                return Source.TRIGGER
            case WatchType.WATCHER:
                return Source.WATCHER
            case _:
                assert_never(self)


class EventKind(StrEnum):
    """Every kind of event the watcher emits."""

    RUN_STATUS_CHANGED = "run.status_changed"
    RUN_RETRYING = "run.retrying"
    GROUP_COUNTS_CHANGED = "group.counts_changed"
    GROUP_FINISHED = "group.finished"
    GROUP_REACTIVATED = "group.reactivated"
    GROUP_RUNS_ADDED = "group.runs_added"
    GROUP_RUNS_FAILED = "group.runs_failed"
    WATCH_ERROR = "watch.error"
    WATCH_RECOVERED = "watch.recovered"
    RUN_STUCK = "run.stuck"
    RUN_DEADLINE_MISSED = "run.deadline_missed"
    RUNS_ABSENT = "runs.absent"
    CONDITION_REMINDER = "condition.reminder"
    CONDITION_RESOLVED = "condition.resolved"
    INCIDENT_ACKNOWLEDGED = "incident.acknowledged"
    INCIDENT_UNACKNOWLEDGED = "incident.unacknowledged"
    INCIDENT_ESCALATED = "incident.escalated"
    INCIDENT_FLAPPING = "incident.flapping"
    NOTIFIER_FAILED = "notifier.failed"
    STATE_UNAVAILABLE = "state.unavailable"
    STATE_RECOVERED = "state.recovered"
    CLUSTER_DEGRADED = "cluster.degraded"
    CLUSTER_RECOVERED = "cluster.recovered"
    WATCHER_HEARTBEAT = "watcher.heartbeat"


def freeze(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy of ``mapping``, so frozen events stay frozen."""
    if not mapping:
        return _EMPTY  # one shared empty mapping: most watches have no labels
    return MappingProxyType(dict(mapping))


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class WatchRef:
    """The identity of a configured watch, as shown in messages and routes."""

    type: WatchType
    id: str
    name: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: freeze({}))

    @property
    def key(self) -> str:
        """A stable key naming this watch: ``type:id``."""
        return f"{self.type.value}:{self.id}"

    @property
    def display_name(self) -> str:
        """The name if one was given, else the id."""
        return self.name or self.id

    @property
    def source(self) -> Source:
        """The upstream API behind this watch."""
        return self.type.source


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened, ready to be routed and rendered.

    ``from_status`` is ``None`` when the previous status is unknown (a run first
    discovered by a ``trigger_runs`` watch, a run reported by a group's runs
    stream). ``details`` holds kind-specific facts (error message, counts ...).
    Reminders and resolved messages carry the event that opened their condition
    in ``cause``; they are routed and silenced as that event would be.
    """

    event_id: str
    kind: EventKind
    severity: Severity
    source: Source
    watch: WatchRef
    subject_id: str
    from_status: str | None
    to_status: str
    observed_at: datetime
    details: Mapping[str, Any] = field(default_factory=lambda: freeze({}))
    url: str | None = None
    cause: Event | None = None
    """For reminders and resolved messages: the event that opened the condition."""
    incident: Mapping[str, Any] | None = None
    """The incident this event belongs to, as it stood when the event was planned
    (:func:`watcher.core.incidents.incident_view`); None outside any incident."""

    @property
    def origin(self) -> Event:
        """The event routes and silences match: the cause, if there is one."""
        return self.cause if self.cause is not None else self


def make_event_id(*parts: object) -> str:
    """A deterministic id from the parts that identify a transition.

    Two replicas that watch the same thing and see the same upstream change
    compute the same id, so a receiver can deduplicate on it.
    """
    digest = hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode())
    return "evt_" + digest.hexdigest()[:32]
