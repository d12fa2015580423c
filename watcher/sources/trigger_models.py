"""Trigger.dev response models and their parsing into snapshots.

Covers both the current API version (top-level ``error``, ``attemptCount``) and
the legacy one (``attempts[].error``). ``payload`` and ``output`` may hold
customer data; they are not modelled, so they never reach an event.
"""

from __future__ import annotations

import sys
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source
from watcher.sources.errors import validate_json

__all__ = ["ListRunsResponse", "RunObject", "parse_list", "parse_run"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class SerializedError(_Model):
    """``SerializedError``: ``message``, ``name``, ``stackTrace``."""

    message: str | None = None
    name: str | None = None
    stack_trace: str | None = Field(default=None, alias="stackTrace")


class Attempt(_Model):
    """One attempt of a run (legacy API versions)."""

    status: str | None = None
    error: SerializedError | None = None


class Environment(_Model):
    """A list item's ``env``: its id and name (``prod``, ``staging``, ``dev``)."""

    name: str | None = None


class RunObject(_Model):
    """``CommonRunObject`` plus the retrieve-only fields the watcher reads."""

    id: str
    status: str
    task_identifier: str | None = Field(default=None, alias="taskIdentifier")
    updated_at: str | None = Field(default=None, alias="updatedAt")
    delayed_until: datetime | None = Field(default=None, alias="delayedUntil")
    tags: list[str] = Field(default_factory=list)
    error: SerializedError | None = None
    attempt_count: int | None = Field(default=None, alias="attemptCount")
    attempts: list[Attempt | None] | None = None
    version: str | None = None
    env: Environment | None = None
    started_at: str | None = Field(default=None, alias="startedAt")
    created_at: str | None = Field(default=None, alias="createdAt")
    finished_at: str | None = Field(default=None, alias="finishedAt")


class Pagination(_Model):
    """List pagination cursors."""

    next: str | None = None
    previous: str | None = None


class ListRunsResponse(_Model):
    """``GET /api/v1/runs``."""

    data: list[RunObject]
    pagination: Pagination = Field(default_factory=Pagination)


def _error(run: RunObject) -> SerializedError | None:
    error = run.error
    if error is None and run.attempts:
        failed = [a.error for a in run.attempts if a is not None and a.error is not None]
        error = failed[-1] if failed else None
    return error


def _error_message(error: SerializedError | None) -> str | None:
    if error is None or not error.message:
        return None
    if error.name and error.name != "Error":
        return f"{error.name}: {error.message}"
    return error.message


_MAX_STACK = 8192


def snapshot(run: RunObject) -> RunSnapshot:
    """The snapshot of a parsed run object."""
    attempt = run.attempt_count
    if attempt is None and run.attempts is not None:
        attempt = len(run.attempts)
    error = _error(run)
    return RunSnapshot(
        source=Source.TRIGGER,
        run_id=run.id,
        # Interned: thousands of watches keep the same few statuses, tasks and tags.
        status=sys.intern(run.status),
        updated_at=run.updated_at,
        error_message=_error_message(error),
        task=sys.intern(run.task_identifier) if run.task_identifier else None,
        tags=tuple(sys.intern(tag) for tag in run.tags),
        attempt=attempt,
        delayed_until=run.delayed_until,
        version=sys.intern(run.version) if run.version else None,
        environment=sys.intern(run.env.name) if run.env and run.env.name else None,
        error_stack=error.stack_trace[:_MAX_STACK] if error and error.stack_trace else None,
        started_at=run.started_at,
        finished_at=run.finished_at,
        created_at=run.created_at,
    )


def parse_run(body: bytes, what: str) -> RunSnapshot:
    """Parse the body of ``GET /api/v3/runs/{runId}``."""
    return snapshot(validate_json(RunObject, body, what))


def parse_list(body: bytes, what: str) -> tuple[list[RunSnapshot], str | None]:
    """Parse the body of one page of ``GET /api/v1/runs``: its runs and the next cursor."""
    page = validate_json(ListRunsResponse, body, what)
    return [snapshot(r) for r in page.data], page.pagination.next
