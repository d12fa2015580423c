"""Watch states to and from plain JSON-ready data, for the state file. Pure.

Only what must survive a restart is kept: the last snapshot, the runs-stream
cursor and failed-run count, the reported health problem (so it is not reported
twice and its recovery is still announced), the stuck bookkeeping, and for
discovery the ids already accounted for. The schedule is not kept: a restored
watch is polled at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from watcher.core.absence import AbsenceState, LastMatch
from watcher.core.events import freeze
from watcher.core.health import HealthState, Problem, ProblemKind
from watcher.core.schedule import SchedulePolicy, initial_state
from watcher.core.snapshots import GroupSnapshot, RunSnapshot
from watcher.core.statuses import Source
from watcher.core.watch import DiscoveryState, WatchState

__all__ = [
    "CodecError",
    "discovery_from_dict",
    "discovery_to_dict",
    "durable_part",
    "watch_state_from_dict",
    "watch_state_to_dict",
]

VERSION = 1


class CodecError(ValueError):
    """Stored data that cannot be read back (another version, or damaged)."""


def _snapshot_to_dict(snapshot: RunSnapshot | GroupSnapshot | None) -> dict[str, Any] | None:
    if snapshot is None:
        return None
    if isinstance(snapshot, RunSnapshot):
        return {
            "type": "run",
            "source": snapshot.source.value,
            "run_id": snapshot.run_id,
            "status": snapshot.status,
            "updated_at": snapshot.updated_at,
            "error_message": snapshot.error_message,
            "task": snapshot.task,
            "tags": list(snapshot.tags),
            "attempt": snapshot.attempt,
            "delayed_until": snapshot.delayed_until.isoformat() if snapshot.delayed_until else None,
            "group_id": snapshot.group_id,
            "version": snapshot.version,
            "environment": snapshot.environment,
            "error_stack": snapshot.error_stack,
            "started_at": snapshot.started_at,
            "finished_at": snapshot.finished_at,
            "created_at": snapshot.created_at,
        }
    return {
        "type": "group",
        "group_id": snapshot.group_id,
        "is_active": snapshot.is_active,
        "num_task_runs": snapshot.num_task_runs,
        "counts": dict(snapshot.counts),
        "status_message": snapshot.status_message,
        "modified_at": snapshot.modified_at,
    }


def _snapshot_from_dict(data: dict[str, Any] | None) -> RunSnapshot | GroupSnapshot | None:
    if data is None:
        return None
    if data["type"] == "run":
        delayed = data.get("delayed_until")
        return RunSnapshot(
            source=Source(data["source"]),
            run_id=data["run_id"],
            status=data["status"],
            updated_at=data.get("updated_at"),
            error_message=data.get("error_message"),
            task=data.get("task"),
            tags=tuple(data.get("tags") or ()),
            attempt=data.get("attempt"),
            delayed_until=datetime.fromisoformat(delayed) if delayed else None,
            group_id=data.get("group_id"),
            version=data.get("version"),
            environment=data.get("environment"),
            error_stack=data.get("error_stack"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            created_at=data.get("created_at"),
        )
    if data["type"] == "group":
        return GroupSnapshot(
            group_id=data["group_id"],
            is_active=bool(data["is_active"]),
            num_task_runs=int(data["num_task_runs"]),
            counts=freeze({str(k): int(v) for k, v in data["counts"].items()}),
            status_message=data.get("status_message"),
            modified_at=data.get("modified_at"),
        )
    raise CodecError(f"unknown snapshot type {data['type']!r}")


def _health_to_dict(health: HealthState) -> dict[str, Any]:
    problem = health.last_problem
    return {
        "failures": health.failures,
        "reported": health.reported.value if health.reported else None,
        "episode": health.episode,
        "problem": (
            {
                "kind": problem.kind.value,
                "message": problem.message,
                "status_code": problem.status_code,
            }
            if problem
            else None
        ),
    }


def _health_from_dict(data: dict[str, Any]) -> HealthState:
    problem = data.get("problem")
    return HealthState(
        failures=int(data.get("failures", 0)),
        reported=ProblemKind(data["reported"]) if data.get("reported") else None,
        last_problem=(
            Problem(ProblemKind(problem["kind"]), problem["message"], problem.get("status_code"))
            if problem
            else None
        ),
        episode=int(data.get("episode", 0)),
    )


def durable_part(state: WatchState | DiscoveryState) -> dict[str, Any]:
    """What is stored of a state; when it has not changed, nothing needs writing."""
    return watch_state_to_dict(state) if isinstance(state, WatchState) else discovery_to_dict(state)


def watch_state_to_dict(state: WatchState) -> dict[str, Any]:
    """A run or group watch's durable state."""
    return {
        "v": VERSION,
        "kind": "watch",
        "snapshot": _snapshot_to_dict(state.snapshot),
        "health": _health_to_dict(state.health),
        "announce": state.announce,
        "cursor": state.cursor,
        "known_failed": state.known_failed,
        "done": state.done,
        "status_since": state.status_since.isoformat() if state.status_since else None,
        "stuck_reported": state.stuck_reported,
        "queued_since": state.queued_since.isoformat() if state.queued_since else None,
        "deadlines_reported": sorted(state.deadlines_reported),
    }


@contextmanager
def _reading(data: dict[str, Any], kind: str) -> Iterator[None]:
    """Check the stored version and kind; turn a damaged record into a :class:`CodecError`."""
    try:
        if data.get("v") != VERSION or data.get("kind") != kind:
            raise CodecError(
                f"stored state version {data.get('v')!r}/{data.get('kind')!r} not understood"
            )
        yield
    except CodecError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CodecError(f"stored {kind} state is damaged: {type(exc).__name__}: {exc}") from None


def watch_state_from_dict(data: dict[str, Any], policy: SchedulePolicy) -> WatchState:
    """A state read back from :func:`watch_state_to_dict`, scheduled to poll at once."""
    with _reading(data, "watch"):
        since = data.get("status_since")
        queued = data.get("queued_since")
        return WatchState(
            schedule=initial_state(policy),
            snapshot=_snapshot_from_dict(data.get("snapshot")),
            health=_health_from_dict(data.get("health") or {}),
            announce=bool(data.get("announce", False)),
            cursor=data.get("cursor"),
            known_failed=int(data.get("known_failed", 0)),
            done=bool(data.get("done", False)),
            status_since=datetime.fromisoformat(since) if since else None,
            stuck_reported=bool(data.get("stuck_reported", False)),
            queued_since=datetime.fromisoformat(queued) if queued else None,
            deadlines_reported=frozenset(str(t) for t in data.get("deadlines_reported") or ()),
        )


def discovery_to_dict(state: DiscoveryState) -> dict[str, Any]:
    """A ``trigger_runs`` watch's durable state: the ids of its window."""
    return {
        "v": VERSION,
        "kind": "discovery",
        "health": _health_to_dict(state.health),
        "seen": sorted(state.seen),
        "baseline_done": state.baseline_done,
        "absence": _absence_to_dict(state.absence),
    }


def _absence_to_dict(absence: AbsenceState | None) -> dict[str, Any] | None:
    if absence is None:
        return None
    last = absence.last
    return {
        "since": absence.since.isoformat(),
        "reported": absence.reported.isoformat() if absence.reported else None,
        "last": None
        if last is None
        else {
            "run_id": last.run_id,
            "status": last.status,
            "created_at": last.created_at.isoformat(),
            "finished_at": last.finished_at,
        },
    }


def _absence_from_dict(data: dict[str, Any] | None) -> AbsenceState | None:
    if not data:
        return None
    last = data.get("last")
    reported = data.get("reported")
    return AbsenceState(
        since=datetime.fromisoformat(data["since"]),
        reported=datetime.fromisoformat(reported) if reported else None,
        last=None
        if not last
        else LastMatch(
            str(last["run_id"]),
            str(last["status"]),
            datetime.fromisoformat(last["created_at"]),
            last.get("finished_at"),
        ),
    )


def discovery_from_dict(data: dict[str, Any], policy: SchedulePolicy) -> DiscoveryState:
    """A discovery state read back from :func:`discovery_to_dict`."""
    with _reading(data, "discovery"):
        return DiscoveryState(
            schedule=initial_state(policy),
            health=_health_from_dict(data.get("health") or {}),
            seen=frozenset(str(x) for x in data.get("seen") or ()),
            baseline_done=bool(data.get("baseline_done", False)),
            absence=_absence_from_dict(data.get("absence")),
        )
