"""Trigger.dev runs as the provider's server keeps and presents them.

A run holds its *internal* status (the webapp's ``TaskRunStatus``); what a client
reads depends on the ``x-trigger-api-version`` header, exactly as the provider's
retrieve and list presenters do (``ApiRetrieveRunPresenter.apiStatusFromRunStatusV1``
and ``V2``, ``apiBooleanHelpersFromRunStatus``; ``apps/webapp/app/api/versions.ts``:
only the exact value ``2025-07-16`` selects the current set). So under the current
version a retrying run reads ``EXECUTING`` with ``attemptCount`` rising, a paused one
``WAITING``; ``REATTEMPTING``, ``FROZEN`` and ``WAITING_FOR_DEPLOY`` appear only
under the legacy set, where ``DEQUEUED`` reads ``EXECUTING``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from watcher.core.statuses import TRIGGER_CURRENT_API_VERSION

__all__ = [
    "INTERNAL_STATUSES",
    "TRun",
    "internal_status",
    "is_current",
    "public_status",
]

# Internal status -> (status under 2025-07-16, status under every other version value).
_PRESENTED: dict[str, tuple[str, str]] = {
    "DELAYED": ("DELAYED", "DELAYED"),
    "PENDING_VERSION": ("PENDING_VERSION", "PENDING_VERSION"),
    "WAITING_FOR_DEPLOY": ("PENDING_VERSION", "WAITING_FOR_DEPLOY"),
    "PENDING": ("QUEUED", "QUEUED"),
    "DEQUEUED": ("DEQUEUED", "EXECUTING"),
    "EXECUTING": ("EXECUTING", "EXECUTING"),
    "RETRYING_AFTER_FAILURE": ("EXECUTING", "REATTEMPTING"),
    "PAUSED": ("WAITING", "FROZEN"),
    "WAITING_TO_RESUME": ("WAITING", "FROZEN"),
    "CANCELED": ("CANCELED", "CANCELED"),
    "COMPLETED_SUCCESSFULLY": ("COMPLETED", "COMPLETED"),
    "COMPLETED_WITH_ERRORS": ("FAILED", "FAILED"),
    "INTERRUPTED": ("FAILED", "INTERRUPTED"),
    "SYSTEM_FAILURE": ("SYSTEM_FAILURE", "SYSTEM_FAILURE"),
    "CRASHED": ("CRASHED", "CRASHED"),
    "EXPIRED": ("EXPIRED", "EXPIRED"),
    "TIMED_OUT": ("TIMED_OUT", "TIMED_OUT"),
}
INTERNAL_STATUSES: frozenset[str] = frozenset(_PRESENTED)

# A public status named by a test or scenario -> the internal status that shows it.
_FROM_PUBLIC = {
    "QUEUED": "PENDING",
    "WAITING": "WAITING_TO_RESUME",
    "REATTEMPTING": "RETRYING_AFTER_FAILURE",
    "FROZEN": "PAUSED",
    "COMPLETED": "COMPLETED_SUCCESSFULLY",
    "FAILED": "COMPLETED_WITH_ERRORS",
}
_FINISHED = frozenset(
    {
        "CANCELED",
        "COMPLETED_SUCCESSFULLY",
        "COMPLETED_WITH_ERRORS",
        "INTERRUPTED",
        "SYSTEM_FAILURE",
        "CRASHED",
        "EXPIRED",
        "TIMED_OUT",
    }
)
_FAILED = _FINISHED - {"CANCELED", "COMPLETED_SUCCESSFULLY", "EXPIRED"}
# Entering EXECUTING from these continues the attempt (a resumed wait); from any
# other status a new attempt starts: the first one, or a retry.
_SAME_ATTEMPT = frozenset({"EXECUTING", "PAUSED", "WAITING_TO_RESUME"})


def internal_status(status: str) -> str:
    """The internal status for ``status``, given as an internal or a public name.

    Any other name stands for a status the provider may add one day: it is kept and
    shown verbatim under both versions (the fault tests' "new status" case).
    """
    return _FROM_PUBLIC.get(status, status)


def is_current(api_version: str | None) -> bool:
    """Whether a request's ``x-trigger-api-version`` selects the current status set."""
    return api_version == TRIGGER_CURRENT_API_VERSION


def public_status(internal: str, api_version: str | None) -> str:
    """What a client reading with ``api_version`` sees for ``internal``."""
    current, legacy = _PRESENTED.get(internal, (internal, internal))
    return current if is_current(api_version) else legacy


_COMPLETED = frozenset(
    {"COMPLETED", "CANCELED", "FAILED", "CRASHED", "INTERRUPTED", "SYSTEM_FAILURE"}
)


def _booleans(status: str) -> dict[str, bool]:
    """``apiBooleanHelpersFromRunStatus`` (of the presented status, as the server does)."""
    completed = status in _COMPLETED
    return {
        "isQueued": status in {"QUEUED", "WAITING_FOR_DEPLOY", "DELAYED", "PENDING_VERSION"},
        "isExecuting": status in {"EXECUTING", "REATTEMPTING", "FROZEN", "DEQUEUED"},
        "isWaiting": status == "WAITING",
        "isCompleted": completed,
        "isSuccess": completed and status == "COMPLETED",
        "isFailed": completed and status != "COMPLETED",
        "isCancelled": status == "CANCELED",
    }


@dataclass
class TRun:
    """A Trigger.dev run: its internal status, attempts and timestamps."""

    id: str
    task: str
    state: str
    created_at: str
    updated_at: str
    tags: list[str] = field(default_factory=list)
    attempt: int = 0
    """``attemptNumber``: the attempt running or last run (0: never started)."""
    error: str | None = None
    """The run's final error, set when it finishes with a failure."""
    delayed_until: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    is_test: bool = False
    version: str = "20261122.1"
    queue: str | None = None
    env: str = "prod"

    @property
    def queue_name(self) -> str:
        """The run's queue as ``filter[queue]`` names it (a task's own queue: ``task/<id>``)."""
        return self.queue or f"task/{self.task}"

    def move(self, status: str, error: str | None, stamp: str) -> None:
        """Go to ``status`` (internal or public name) at ``stamp``; ``error`` becomes the
        run's error when it finishes with a failure. A retried attempt's error is not kept:
        the provider's API does not show it either."""
        target = internal_status(status)
        if target == "EXECUTING" and self.state not in _SAME_ATTEMPT:
            self.attempt += 1
            self.started_at = self.started_at or stamp
        if target in _FINISHED:
            self.finished_at = stamp
            self.error = error if target in _FAILED else None
        self.state = target
        self.updated_at = stamp

    def present(self, api_version: str | None, *, detail: bool) -> dict[str, Any]:
        """The run as ``GET /api/v3/runs/{id}`` (``detail``) or a ``GET /api/v1/runs``
        item shows it to a client reading with ``api_version``."""
        status = public_status(self.state, api_version)
        data: dict[str, Any] = {
            "id": self.id,
            "status": status,
            "taskIdentifier": self.task,
            "version": self.version,
            **_booleans(status),
            "isTest": self.is_test,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "tags": sorted(self.tags),
            "costInCents": 0.01,
            "baseCostInCents": 0.0025,
            "durationMs": self._duration_ms(),
            "depth": 0,
            "metadata": {},
        }
        for key, value in (
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
            ("delayedUntil", self.delayed_until),
        ):
            if value:
                data[key] = value
        if not detail:
            # A production environment has no user; `env.user` is a string or absent.
            data["env"] = {"id": f"env_sim_{self.env}", "name": self.env}
            return data
        data["triggerFunction"] = "trigger"
        data["payload"] = {"customer_email": "jane@example.com", "card": "4242424242424242"}
        if self.state == "COMPLETED_SUCCESSFULLY":
            data["output"] = {"invoice": "INV-SECRET-OUTPUT"}
        if self.error:
            data["error"] = {
                "message": self.error,
                "name": "Error",
                "stackTrace": f"Error: {self.error}\n    at run (src/trigger/{self.task}.ts:12:11)",
            }
        data["relatedRuns"] = {"children": []}
        data["attemptCount"] = self.attempt
        # "We're removing attempts from the API": both versions send an empty list.
        data["attempts"] = []
        return data

    def _duration_ms(self) -> int:
        if not self.started_at:
            return 0
        end = self.finished_at or self.updated_at
        span = datetime.fromisoformat(end) - datetime.fromisoformat(self.started_at)
        return max(0, int(span.total_seconds() * 1000))
