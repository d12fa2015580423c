"""Parallel response models (``../shared/reference``) and their parsing into snapshots.

Tolerant by design: unknown fields are ignored, unknown status values are kept
verbatim, and only the fields the watcher needs are required.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from watcher.core.events import freeze
from watcher.core.snapshots import GroupSnapshot, RunSnapshot
from watcher.core.statuses import Source
from watcher.sources.errors import ResponseShapeError, validate, validate_json

__all__ = [
    "TaskGroupResponse",
    "TaskRun",
    "group_snapshot",
    "parse_group",
    "parse_group_event",
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


class GroupStatusEvent(_Model):
    """``task_group_status`` event of a group's events stream."""

    type: str
    event_id: str | None = None
    status: TaskGroupStatus


class ErrorEvent(_Model):
    """``error`` event of a stream."""

    type: str
    error: ErrorInfo


def run_snapshot(run: TaskRun) -> RunSnapshot:
    """The snapshot of a parsed ``TaskRun``."""
    return RunSnapshot(
        source=Source.PARALLEL,
        run_id=run.run_id,
        status=sys.intern(run.status),  # thousands of watches share a few statuses
        updated_at=run.modified_at,
        error_message=run.error.message if run.error else None,
        task=sys.intern(run.processor) if run.processor else None,
        group_id=run.taskgroup_id,
        created_at=run.created_at,
    )


def parse_run(body: bytes, what: str) -> RunSnapshot:
    """Parse the body of ``GET /v1/tasks/runs/{id}``."""
    return run_snapshot(validate_json(TaskRun, body, what))


def parse_group(body: bytes, what: str) -> GroupSnapshot:
    """Parse the body of ``GET /v1/tasks/groups/{id}``."""
    group = validate_json(TaskGroupResponse, body, what)
    return group_snapshot(group.taskgroup_id, group.status)


def group_snapshot(group_id: str, status: TaskGroupStatus) -> GroupSnapshot:
    """The snapshot of a parsed ``TaskGroupStatus``."""
    return GroupSnapshot(
        group_id=group_id,
        is_active=status.is_active,
        num_task_runs=status.num_task_runs,
        counts=freeze({k: v for k, v in status.task_run_status_counts.items() if v}),
        status_message=status.status_message,
        modified_at=status.modified_at,
    )


class StreamErrorEvent(Exception):
    """The stream itself reported an error (an ``error`` event)."""


def _event_payload(data: str, what: str) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except ValueError as exc:
        raise ResponseShapeError(f"{what}: malformed JSON in stream event: {exc}") from None
    if not isinstance(payload, dict):
        raise ResponseShapeError(f"{what}: stream event is not a JSON object")
    if payload.get("type") == "error":
        err = validate(ErrorEvent, payload, what).error
        raise StreamErrorEvent(f"{what}: stream error: {err.message or 'no message'}")
    return payload


def parse_run_event(data: str, what: str) -> tuple[str | None, RunSnapshot] | None:
    """Parse one SSE ``data`` payload of a runs stream.

    Returns ``(event_id, run)`` for ``task_run.state``, ``None`` for event types
    the watcher does not use, and raises ``StreamErrorEvent`` for ``error``.
    """
    payload = _event_payload(data, what)
    kind = payload.get("type")
    if kind != "task_run.state":
        return None
    event = validate(TaskRunEvent, payload, what)
    return event.event_id, run_snapshot(event.run)


def parse_group_event(
    data: str, what: str, group_id: str
) -> tuple[str | None, GroupSnapshot | RunSnapshot] | None:
    """Parse one SSE ``data`` payload of a group's events stream.

    ``(event_id, snapshot)`` for ``task_group_status`` (a group snapshot) and
    ``task_run.state`` (a run snapshot); ``None`` for types the watcher does not
    know (new ones must not break it); ``StreamErrorEvent`` for ``error``.
    """
    payload = _event_payload(data, what)
    match payload.get("type"):
        case "task_group_status":
            status = validate(GroupStatusEvent, payload, what)
            return status.event_id, group_snapshot(group_id, status.status)
        case "task_run.state":
            event = validate(TaskRunEvent, payload, what)
            return event.event_id, run_snapshot(event.run)
    return None
