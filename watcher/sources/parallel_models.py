"""Parallel response models (``../shared/reference``) and their parsing into snapshots.

Tolerant by design: unknown fields are ignored, unknown status values are kept
verbatim, and only the fields the watcher needs are required.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from watcher.core.events import freeze
from watcher.core.snapshots import FailedRun, GroupSnapshot, RunSnapshot
from watcher.core.statuses import Source
from watcher.sources.errors import ResponseShapeError, validate

__all__ = [
    "TaskGroupResponse",
    "TaskRun",
    "parse_group",
    "parse_run",
    "parse_run_event",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ErrorInfo(_Model):
    """``Error``: ``ref_id``, ``message``, ``detail``."""

    message: str | None = None
    ref_id: str | None = None


class TaskRun(_Model):
    """``TaskRun``: status of one task run."""

    run_id: str
    status: str
    is_active: bool | None = None
    processor: str | None = None
    error: ErrorInfo | None = None
    taskgroup_id: str | None = None
    created_at: str | None = None
    modified_at: str | None = None


class TaskGroupStatus(_Model):
    """``TaskGroupStatus``: aggregate status of a group."""

    num_task_runs: int = Field(ge=0)
    task_run_status_counts: dict[str, int]
    is_active: bool
    status_message: str | None = None
    modified_at: str | None = None


class TaskGroupResponse(_Model):
    """``TaskGroupResponse``: a group and its status."""

    taskgroup_id: str
    status: TaskGroupStatus
    created_at: str | None = None


class TaskRunEvent(_Model):
    """``task_run.state`` event of a runs stream."""

    type: str
    event_id: str | None = None
    run: TaskRun


class ErrorEvent(_Model):
    """``error`` event of a stream."""

    type: str
    error: ErrorInfo


def run_snapshot(run: TaskRun) -> RunSnapshot:
    """The snapshot of a parsed ``TaskRun``."""
    return RunSnapshot(
        source=Source.PARALLEL,
        run_id=run.run_id,
        status=run.status,
        updated_at=run.modified_at,
        error_message=run.error.message if run.error else None,
        task=run.processor,
        group_id=run.taskgroup_id,
    )


def parse_run(data: Any, what: str) -> RunSnapshot:
    """Parse ``GET /v1/tasks/runs/{id}``."""
    return run_snapshot(validate(TaskRun, data, what))


def parse_group(data: Any, what: str) -> GroupSnapshot:
    """Parse ``GET /v1/tasks/groups/{id}``."""
    group = validate(TaskGroupResponse, data, what)
    status = group.status
    return GroupSnapshot(
        group_id=group.taskgroup_id,
        is_active=status.is_active,
        num_task_runs=status.num_task_runs,
        counts=freeze({k: v for k, v in status.task_run_status_counts.items() if v}),
        status_message=status.status_message,
        modified_at=status.modified_at,
    )


class StreamErrorEvent(Exception):
    """The stream itself reported an error (an ``error`` event)."""


def parse_run_event(data: str, what: str) -> tuple[str | None, RunSnapshot] | None:
    """Parse one SSE ``data`` payload of a runs stream.

    Returns ``(event_id, run)`` for ``task_run.state``, ``None`` for event types
    the watcher does not use, and raises ``StreamErrorEvent`` for ``error``.
    """
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise ResponseShapeError(f"{what}: malformed JSON in stream event: {exc}") from None
    if not isinstance(payload, dict):
        raise ResponseShapeError(f"{what}: stream event is not a JSON object")
    kind = payload.get("type")
    if kind == "error":
        err = validate(ErrorEvent, payload, what).error
        raise StreamErrorEvent(f"{what}: stream error: {err.message or 'no message'}")
    if kind != "task_run.state":
        return None
    event = validate(TaskRunEvent, payload, what)
    return event.event_id, run_snapshot(event.run)


def failed_run(run: RunSnapshot) -> FailedRun:
    """The failed-run record of a run snapshot taken from a stream."""
    return FailedRun(run_id=run.run_id, error_message=run.error_message, modified_at=run.updated_at)
