"""The simulated state of both providers, changed by scenarios, tests and the control API."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio

from watcher.simulator.trigger_runs import TRun, internal_status

__all__ = ["Fault", "PGroup", "PRun", "TRun", "World"]

_PARALLEL_ACTIVE = {"queued", "running", "cancelling"}
_PARALLEL_DONE = {"completed", "failed", "cancelled"}


def _ts(moment: datetime, timespec: str = "microseconds") -> str:
    """RFC 3339 in UTC: microseconds as Parallel (Python) writes them; Trigger.dev's
    server serialises JavaScript dates, with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


@dataclass
class PRun:
    """A Parallel task run."""

    run_id: str
    status: str
    created_at: str
    modified_at: str
    group_id: str | None = None
    error: str | None = None
    processor: str = "core"

    def to_json(self) -> dict[str, Any]:
        """``TaskRun``."""
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "interaction_id": self.run_id,
            "status": self.status,
            "is_active": self.status in _PARALLEL_ACTIVE,
            "processor": self.processor,
            "metadata": {"customer": "secret-customer-data"},
            "taskgroup_id": self.group_id,
            "created_at": self.created_at,
            "modified_at": self.modified_at,
            "warnings": [],
        }
        if self.error:
            data["error"] = {"ref_id": f"ref_{self.run_id}", "message": self.error, "detail": {}}
        return data


@dataclass
class PGroup:
    """A Parallel task group.

    ``run_log``: every state a run of the group took, in order (the runs stream serves
    each run's latest entry after the cursor); ``events``: the runs that reached a
    non-active status, ``action_required`` included (the events stream's
    ``task_run.state``); ``status_events``: its ``task_group_status`` events.
    """

    group_id: str
    created_at: str
    modified_at: str
    runs: dict[str, PRun] = field(default_factory=dict)
    run_log: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def status_json(self) -> dict[str, Any]:
        """``TaskGroupStatus``."""
        counts: dict[str, int] = {}
        for run in self.runs.values():
            counts[run.status] = counts.get(run.status, 0) + 1
        active = any(r.status in _PARALLEL_ACTIVE for r in self.runs.values())
        done = sum(counts.get(s, 0) for s in _PARALLEL_DONE)
        return {
            "num_task_runs": len(self.runs),
            "task_run_status_counts": counts,
            "is_active": active,
            "status_message": f"{done}/{len(self.runs)} runs done",
            "modified_at": self.modified_at,
        }

    def to_json(self) -> dict[str, Any]:
        """``TaskGroupResponse``."""
        return {
            "taskgroup_id": self.group_id,
            "status": self.status_json(),
            "created_at": self.created_at,
            "metadata": {"owner": "simulator"},
        }


@dataclass
class Fault:
    """Misbehaviour for requests whose path contains ``match``.

    ``kind``: ``status`` (answer ``status`` with ``body``/``headers``),
    ``hang`` (never answer), ``malformed`` (200 with broken JSON),
    ``wrong_shape`` (200 with JSON of another shape), ``reset`` (close
    mid-body), ``drip`` (send the body a byte at a time), ``break_stream`` (an
    event stream that sends ``after`` events, then half of the next, then hangs
    up). ``times=None`` lasts until cleared.
    """

    match: str
    kind: str = "status"
    status: int = 500
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    times: int | None = None
    hits: int = 0
    after: int = 1


class World:
    """Both providers' state. Every change stamps the affected objects with the time."""

    def __init__(
        self,
        *,
        parallel_key: str = "sim-parallel-key",
        trigger_key: str = "tr_dev_simulator_key",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.parallel_key = parallel_key
        self.trigger_key = trigger_key
        self.now = now
        self.groups: dict[str, PGroup] = {}
        self.parallel_runs: dict[str, PRun] = {}
        self.trigger_runs: dict[str, TRun] = {}
        self.faults: list[Fault] = []
        self.requests: dict[str, int] = {}
        self._counted: anyio.Event | None = None
        self.seen: deque[tuple[str, str, dict[str, list[str]], dict[str, str]]] = deque(
            maxlen=10_000
        )
        """The last upstream requests: method, path, query and headers (contract tests)."""
        self.event_cursors: list[str | None] = []
        """``last_event_id`` of each request for a group's events stream."""
        self._seq = itertools.count(1)
        self._run_seq = itertools.count(1)
        self.trigger_listeners: list[Callable[[TRun], None]] = []
        """Told of every Trigger.dev run created or changed (the realtime shapes)."""

    # -- Parallel --------------------------------------------------------------------

    def _stamp(self) -> str:
        return _ts(self.now())

    def _trigger_stamp(self) -> str:
        return _ts(self.now(), "milliseconds")

    def add_group(self, group_id: str, runs: int = 0, *, status: str = "queued") -> PGroup:
        """Create a task group, optionally with ``runs`` runs in ``status``."""
        stamp = self._stamp()
        group = PGroup(group_id, stamp, stamp)
        self.groups[group_id] = group
        self.add_group_runs(group_id, runs, status=status)
        return group

    def add_group_runs(self, group_id: str, count: int, *, status: str = "queued") -> list[str]:
        """Add ``count`` runs to a group."""
        group = self.groups[group_id]
        stamp = self._stamp()
        ids = []
        for _ in range(count):
            run_id = f"trun_{group_id.removeprefix('tgrp_')}_{next(self._run_seq):05d}"
            run = PRun(run_id, status, stamp, stamp, group_id=group_id)
            group.runs[run_id] = run
            self.parallel_runs[run_id] = run
            group.run_log.append(self._event(run))
            ids.append(run_id)
        if count:
            group.modified_at = stamp
            self._group_status_event(group)
        return ids

    def add_parallel_run(self, run_id: str, status: str = "queued") -> PRun:
        """A standalone Parallel task run."""
        stamp = self._stamp()
        run = PRun(run_id, status, stamp, stamp)
        self.parallel_runs[run_id] = run
        return run

    def set_parallel_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """Move a Parallel run to ``status`` (``error`` for failures)."""
        run = self.parallel_runs[run_id]
        run.status = status
        run.error = error if status == "failed" else None
        run.modified_at = self._stamp()
        if run.group_id:
            group = self.groups[run.group_id]
            group.modified_at = run.modified_at
            entry = self._event(run)
            group.run_log.append(entry)
            if status not in _PARALLEL_ACTIVE:  # as the API: a run reached a non-active status
                group.events.append(entry)
            self._group_status_event(group)

    def _event(self, run: PRun) -> tuple[str, dict[str, Any]]:
        return f"ev_{next(self._seq):08d}", run.to_json()

    def _group_status_event(self, group: PGroup) -> None:
        group.status_events.append((f"ev_{next(self._seq):08d}", group.status_json()))

    def group_runs(self, group_id: str, status: str | None = None) -> list[str]:
        """Ids of a group's runs, optionally only those in ``status``."""
        return [
            r.run_id
            for r in self.groups[group_id].runs.values()
            if status is None or r.status == status
        ]

    def progress_group(
        self, group_id: str, count: int, status: str, error: str | None = None
    ) -> list[str]:
        """Move the first ``count`` active runs of a group to ``status``."""
        active = [
            r.run_id
            for r in self.groups[group_id].runs.values()
            if r.status in _PARALLEL_ACTIVE | {"action_required"}
        ]
        chosen = active[:count]
        for run_id in chosen:
            self.set_parallel_run(run_id, status, error)
        return chosen

    # -- Trigger.dev ---------------------------------------------------------------------

    def add_trigger_run(
        self,
        run_id: str,
        task: str,
        status: str = "QUEUED",
        *,
        tags: list[str] | None = None,
        created_at: datetime | None = None,
        error: str | None = None,
    ) -> TRun:
        """Create a Trigger.dev run in ``status`` (a public or an internal name)."""
        stamp = self._trigger_stamp()
        run = TRun(
            run_id,
            task,
            "PENDING",
            _ts(created_at, "milliseconds") if created_at else stamp,
            stamp,
            tags=list(tags or []),
        )
        if internal_status(status) != "PENDING":
            run.move(status, error, stamp)
        self.trigger_runs[run_id] = run
        self._trigger_changed(run)
        return run

    def set_trigger_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """Move a Trigger.dev run to ``status`` (a public or an internal name).

        ``EXECUTING`` after anything but a wait starts a new attempt; a failed finish
        records ``error`` as the run's error.
        """
        run = self.trigger_runs[run_id]
        run.move(status, error, self._trigger_stamp())
        self._trigger_changed(run)

    def _trigger_changed(self, run: TRun) -> None:
        for listener in self.trigger_listeners:
            listener(run)

    # -- requests -------------------------------------------------------------------------

    def count(self, name: str) -> None:
        """Count one request of kind ``name`` (``parallel.run``, ``trigger.list``, ...)."""
        self.requests[name] = self.requests.get(name, 0) + 1
        if self._counted is not None:
            self._counted.set()
            self._counted = None

    async def wait_for_requests(self, name: str, count: int) -> None:
        """Return once ``count`` requests of kind ``name`` have arrived."""
        while self.requests.get(name, 0) < count:
            if self._counted is None:
                self._counted = anyio.Event()
            await self._counted.wait()

    # -- faults ---------------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        """Inject a fault (first match wins)."""
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every fault."""
        self.faults.clear()

    def take_fault(self, path: str, kinds: frozenset[str] | None = None) -> Fault | None:
        """The fault that applies to ``path`` now (of one of ``kinds``), counting it."""
        for fault in self.faults:
            if kinds is not None and fault.kind not in kinds:
                continue
            if kinds is None and fault.kind in _STREAM_FAULTS:
                continue
            if fault.match in path and (fault.times is None or fault.hits < fault.times):
                fault.hits += 1
                return fault
        return None


_STREAM_FAULTS = frozenset({"break_stream"})
