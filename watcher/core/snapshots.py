"""Frozen snapshots of upstream state, the input of the diff."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from watcher.core.events import freeze
from watcher.core.statuses import Source

__all__ = ["FailedRun", "GroupObservation", "GroupSnapshot", "RunSnapshot"]


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """One run as last seen upstream (Parallel task run or Trigger.dev run).

    ``updated_at`` is the provider's own modification time, verbatim; it feeds
    event ids and orders observations that arrive by different paths.
    """

    source: Source
    run_id: str
    status: str
    updated_at: str | None = None
    error_message: str | None = None
    task: str | None = None
    tags: tuple[str, ...] = ()
    attempt: int | None = None
    delayed_until: datetime | None = None
    group_id: str | None = None
    version: str | None = None
    """The deployed version that ran it (Trigger.dev ``version``)."""
    environment: str | None = None
    """The provider's environment (Trigger.dev ``env.name``, or the key's: ``tr_prod_``)."""
    error_stack: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    created_at: str | None = None


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """A Parallel task group's aggregate status (``TaskGroupStatus``)."""

    group_id: str
    is_active: bool
    num_task_runs: int
    counts: Mapping[str, int] = field(default_factory=lambda: freeze({}))
    status_message: str | None = None
    modified_at: str | None = None

    def count(self, status: str) -> int:
        """How many runs of the group have ``status``."""
        return int(self.counts.get(status, 0))


@dataclass(frozen=True, slots=True)
class FailedRun:
    """A run the group's runs stream reported as failed."""

    run_id: str
    error_message: str | None = None
    modified_at: str | None = None

    @classmethod
    def of(cls, run: RunSnapshot) -> FailedRun:
        """The record of a failed run reported by a stream (the runs or the events stream)."""
        return cls(run_id=run.run_id, error_message=run.error_message, modified_at=run.updated_at)


@dataclass(frozen=True, slots=True)
class GroupObservation:
    """One poll of a group: its status plus the failed runs read since the cursor.

    ``cursor`` is the stream's ``last_event_id`` after reading (unchanged when
    the stream was not read); ``streamed`` says whether it was read at all.
    """

    snapshot: GroupSnapshot
    failed_runs: tuple[FailedRun, ...] = ()
    cursor: str | None = None
    streamed: bool = False
