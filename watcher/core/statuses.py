"""Upstream status sets, as data tables.

Every status the providers document is listed here once, with whether it is
terminal and the severity a transition *into* it carries. Anything not in the
tables is kept verbatim, treated as non-terminal and reported as a warning:
a provider adding a status must never crash the daemon or hide a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

__all__ = [
    "PARALLEL_STATUSES",
    "TRIGGER_API_VERSIONS",
    "TRIGGER_CURRENT_API_VERSION",
    "TRIGGER_CURRENT_STATUSES",
    "TRIGGER_LEGACY_STATUSES",
    "TRIGGER_STATUSES",
    "ParallelStatus",
    "Severity",
    "Source",
    "StatusInfo",
    "TriggerApiVersion",
    "TriggerStatus",
    "classify",
    "is_known",
    "trigger_public_status",
    "trigger_statuses",
]


class Source(StrEnum):
    """Which upstream API a watch talks to (``watcher``: the daemon's own events)."""

    PARALLEL = "parallel"
    TRIGGER = "trigger"
    WATCHER = "watcher"


class Severity(StrEnum):
    """How much an event matters to a human, in decreasing order of urgency."""

    FAILURE = "failure"
    WARNING = "warning"
    SUCCESS = "success"
    INFO = "info"


class ParallelStatus(StrEnum):
    """Parallel task run statuses (``TaskRun.status``)."""

    QUEUED = "queued"
    ACTION_REQUIRED = "action_required"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class TriggerStatus(StrEnum):
    """Trigger.dev run statuses, current (2025-07-16) and legacy sets together."""

    PENDING_VERSION = "PENDING_VERSION"
    DELAYED = "DELAYED"
    QUEUED = "QUEUED"
    DEQUEUED = "DEQUEUED"
    EXECUTING = "EXECUTING"
    WAITING = "WAITING"
    REATTEMPTING = "REATTEMPTING"
    FROZEN = "FROZEN"
    WAITING_FOR_DEPLOY = "WAITING_FOR_DEPLOY"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    INTERRUPTED = "INTERRUPTED"
    SYSTEM_FAILURE = "SYSTEM_FAILURE"
    EXPIRED = "EXPIRED"
    TIMED_OUT = "TIMED_OUT"


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """What the watcher knows about one status value."""

    known: bool
    terminal: bool
    severity: Severity


_F, _W, _S, _I = Severity.FAILURE, Severity.WARNING, Severity.SUCCESS, Severity.INFO

# status -> (terminal, severity of entering it)
_PARALLEL: dict[str, tuple[bool, Severity]] = {
    ParallelStatus.QUEUED: (False, _I),
    ParallelStatus.ACTION_REQUIRED: (False, _W),
    ParallelStatus.RUNNING: (False, _I),
    ParallelStatus.COMPLETED: (True, _S),
    ParallelStatus.FAILED: (True, _F),
    ParallelStatus.CANCELLING: (False, _I),
    ParallelStatus.CANCELLED: (True, _I),
}

_TRIGGER: dict[str, tuple[bool, Severity]] = {
    TriggerStatus.PENDING_VERSION: (False, _I),
    TriggerStatus.DELAYED: (False, _I),
    TriggerStatus.QUEUED: (False, _I),
    TriggerStatus.DEQUEUED: (False, _I),
    TriggerStatus.EXECUTING: (False, _I),
    TriggerStatus.WAITING: (False, _I),
    TriggerStatus.REATTEMPTING: (False, _W),
    TriggerStatus.FROZEN: (False, _I),
    TriggerStatus.WAITING_FOR_DEPLOY: (False, _I),
    TriggerStatus.COMPLETED: (True, _S),
    TriggerStatus.CANCELED: (True, _I),
    TriggerStatus.FAILED: (True, _F),
    TriggerStatus.CRASHED: (True, _F),
    TriggerStatus.INTERRUPTED: (True, _F),
    TriggerStatus.SYSTEM_FAILURE: (True, _F),
    TriggerStatus.EXPIRED: (True, _F),
    TriggerStatus.TIMED_OUT: (True, _F),
}

_TABLES = {Source.PARALLEL: _PARALLEL, Source.TRIGGER: _TRIGGER}

PARALLEL_STATUSES: frozenset[str] = frozenset(_PARALLEL)
TRIGGER_STATUSES: frozenset[str] = frozenset(_TRIGGER)

TriggerApiVersion = Literal["2025-07-16", "legacy"]
"""What ``sources.trigger.api_version`` may say: the current version, or ``legacy``
(no ``x-trigger-api-version`` header). The provider selects the current status set
only for the exact value ``2025-07-16`` and silently serves the legacy set for any
other value, so nothing else is accepted."""

TRIGGER_CURRENT_API_VERSION: Final = "2025-07-16"
TRIGGER_API_VERSIONS: tuple[TriggerApiVersion, ...] = (TRIGGER_CURRENT_API_VERSION, "legacy")

TRIGGER_CURRENT_STATUSES: frozenset[str] = frozenset(
    s for s in _TRIGGER if s not in {"REATTEMPTING", "FROZEN", "WAITING_FOR_DEPLOY", "INTERRUPTED"}
)
"""The statuses the provider sends under ``2025-07-16`` (its SDK's ``RunStatus``)."""
TRIGGER_LEGACY_STATUSES: frozenset[str] = frozenset(
    s for s in _TRIGGER if s not in {"DEQUEUED", "WAITING"}
)
"""The statuses it sends for every other version value (``RunStatusUnspecifiedApiVersion``)."""


def trigger_statuses(version: TriggerApiVersion) -> frozenset[str]:
    """The status set the provider sends (and accepts in ``filter[status]``) under ``version``."""
    return (
        TRIGGER_CURRENT_STATUSES
        if version == TRIGGER_CURRENT_API_VERSION
        else TRIGGER_LEGACY_STATUSES
    )


_UNKNOWN = StatusInfo(known=False, terminal=False, severity=Severity.WARNING)


_INFOS: dict[Source, dict[str, StatusInfo]] = {
    source: {
        status: StatusInfo(known=True, terminal=terminal, severity=severity)
        for status, (terminal, severity) in table.items()
    }
    for source, table in _TABLES.items()
}


def classify(source: Source, status: str) -> StatusInfo:
    """Look ``status`` up in ``source``'s table; unknown values get a safe default."""
    return _INFOS.get(source, {}).get(status, _UNKNOWN)


def is_known(source: Source, status: str) -> bool:
    """True when ``status`` is documented for ``source``."""
    return status in _TABLES.get(source, {})


_TRIGGER_INTERNAL: dict[str, str] = {
    "PENDING": "QUEUED",
    "WAITING_FOR_DEPLOY": "PENDING_VERSION",
    "PAUSED": "WAITING",
    "WAITING_TO_RESUME": "WAITING",
    "RETRYING_AFTER_FAILURE": "EXECUTING",
    "COMPLETED_SUCCESSFULLY": "COMPLETED",
    "COMPLETED_WITH_ERRORS": "FAILED",
    "INTERRUPTED": "FAILED",
}


def trigger_public_status(internal: str) -> str:
    """The current-version status of a Trigger.dev run's internal ``TaskRunStatus`` (what
    its realtime rows hold), as the SDK's ``apiStatusFromRunStatus`` maps it; the other
    internal names (``DELAYED``, ``DEQUEUED``, ``EXECUTING``, ``CANCELED``, ...) are
    public as they are, and a name the provider adds one day stays verbatim."""
    return _TRIGGER_INTERNAL.get(internal, internal)
