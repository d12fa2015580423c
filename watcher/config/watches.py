"""The ``watches`` section: what to watch, one model per watch type."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from watcher.config.base import Duration, PositiveDuration, Strict, UpstreamId
from watcher.core.absence import Expectation, fire_times, schedule_error
from watcher.core.deadlines import RunDeadlines
from watcher.core.events import WatchRef, WatchType, freeze
from watcher.core.statuses import (
    TRIGGER_CURRENT_API_VERSION,
    TRIGGER_STATUSES,
    Severity,
    TriggerApiVersion,
    trigger_statuses,
)
from watcher.sources.trigger import ListFilter

__all__ = [
    "Deadlines",
    "Expect",
    "ParallelTaskGroupWatch",
    "ParallelTaskRunWatch",
    "TriggerRunWatch",
    "TriggerRunsFilter",
    "TriggerRunsWatch",
    "WatchConfig",
]


class _WatchBase(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    labels: dict[str, str] = Field(default_factory=dict)
    notify_initial: bool = False
    min_interval: PositiveDuration | None = None
    max_interval: PositiveDuration | None = None

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if not key or not all(c.isalnum() or c in "_-" for c in key):
                raise ValueError(f"label name {key!r}: use letters, digits, '_' or '-'")
        return labels

    def ref(self) -> WatchRef:
        """This watch's identity as carried by its events."""
        raise NotImplementedError


class _SingleWatch(_WatchBase):
    id: UpstreamId

    def ref(self) -> WatchRef:
        """This watch's identity as carried by its events."""
        kind = WatchType(getattr(self, "type"))  # noqa: B009 - defined by each subclass as a Literal
        return WatchRef(kind, self.id, self.name, freeze(self.labels))


class ParallelTaskGroupWatch(_SingleWatch):
    """A Parallel task group: its counts, failed runs, finishing."""

    type: Literal["parallel_task_group"]
    mode: Literal["auto", "stream", "poll"] = "auto"
    """``auto``: hold the group's event stream open while it is active, poll when the
    stream is refused or keeps failing; ``stream``: the same, and say so loudly when
    it falls back; ``poll``: never stream."""


class Deadlines(Strict):
    """``deadlines``: how long a run may wait in a queue, run, and live in all
    (``core/deadlines.py``); each missed one is a ``run.deadline_missed``, once."""

    queued: PositiveDuration | None = None
    running: PositiveDuration | None = None
    total: PositiveDuration | None = None

    def limits(self) -> RunDeadlines:
        """The limits as the core takes them."""
        return RunDeadlines(self.queued, self.running, self.total)


class _RunWatch(_SingleWatch):
    stuck_after: PositiveDuration | None = None
    """Notify (``run.stuck``) when the run stays in one non-terminal status this long."""
    deadlines: Deadlines | None = None


class ParallelTaskRunWatch(_RunWatch):
    """A single Parallel task run."""

    type: Literal["parallel_task_run"]


class TriggerRunWatch(_RunWatch):
    """A single Trigger.dev run."""

    type: Literal["trigger_run"]
    mode: Literal["auto", "poll"] = "auto"
    """``auto``: follow the run on the environment's realtime feed while it holds the
    run, polling only to cross-check (and fully whenever the feed cannot see it);
    ``poll``: always poll."""


def _queue_name(value: object) -> object:
    """A queue as ``filter[queue]`` names it; ``{type: task, name: N}`` is ``task/N`` and
    ``{type: custom, name: N}`` is ``N``, as the official SDK sends them."""
    if not isinstance(value, dict):
        return value
    kind, name = value.get("type"), value.get("name")
    if set(value) != {"type", "name"} or kind not in ("task", "custom") or not name:
        raise ValueError(
            f"queue {value!r}: give a queue name, or {{type: task, name: <task id>}}, "
            "or {type: custom, name: <queue name>}"
        )
    return f"task/{name}" if kind == "task" else name


QueueName = Annotated[
    str,
    BeforeValidator(_queue_name),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "properties": {
                        "type": {"enum": ["task", "custom"]},
                        "name": {"type": "string"},
                    },
                    "required": ["type", "name"],
                    "additionalProperties": False,
                },
            ]
        }
    ),
]


class TriggerRunsFilter(Strict):
    """``filter[...]`` of Trigger.dev's list endpoint."""

    status: list[str] = Field(default_factory=list)
    task: list[str] = Field(default_factory=list)
    tag: list[str] = Field(default_factory=list)
    version: list[str] = Field(default_factory=list)
    queue: list[QueueName] = Field(default_factory=list)
    period: str = Field(default="1d", pattern=r"^\d+[smhdw]$")
    is_test: bool | None = None

    @field_validator("status")
    @classmethod
    def _known_statuses(cls, statuses: list[str]) -> list[str]:
        unknown = [s for s in statuses if s not in TRIGGER_STATUSES]
        if unknown:
            raise ValueError(
                f"unknown Trigger.dev status {', '.join(map(repr, unknown))} "
                f"(the API answers 400); known: {', '.join(sorted(TRIGGER_STATUSES))}"
            )
        return statuses

    def list_filter(self) -> ListFilter:
        """The request filter this section asks for."""
        return ListFilter(
            status=tuple(self.status),
            task=tuple(self.task),
            tag=tuple(self.tag),
            version=tuple(self.version),
            queue=tuple(self.queue),
            period=self.period,
            is_test=self.is_test,
        )

    def matches(
        self, status: str, task: str | None, tags: Sequence[str], version: str | None
    ) -> bool:
        """Whether a run with these facts is one this filter lists (as far as the facts
        tell: the queue, the test flag and the creation window are not in them, and a
        filter that names a queue matches only the runs it adopted)."""
        return (
            (not self.status or status in self.status)
            and (not self.task or task in self.task)
            and (not self.tag or bool(set(tags) & set(self.tag)))
            and (not self.version or version in self.version)
            and not self.queue
        )

    def check_statuses(self, api_version: TriggerApiVersion, where: str) -> None:
        """Refuse statuses the API version does not have: the list endpoint answers 400."""
        valid = trigger_statuses(api_version)
        wrong = [s for s in self.status if s not in valid]
        if wrong:
            other = "legacy" if api_version == TRIGGER_CURRENT_API_VERSION else "current"
            raise ValueError(
                f"{where}.filter.status: {', '.join(map(repr, wrong))} "
                f"{'belongs' if len(wrong) == 1 else 'belong'} to the {other} status set, "
                f"not to sources.trigger.api_version {api_version!r} (the API answers 400); "
                f"valid: {', '.join(sorted(valid))}"
                + (
                    " (a retrying run reads EXECUTING, a paused one WAITING)"
                    if api_version == TRIGGER_CURRENT_API_VERSION
                    else ""
                )
            )


class Expect(Strict):
    """``expect``: a run the watch's filter should see reach ``status`` every period, or
    on a cron schedule (``core/absence.py``); when none does, ``runs.absent``."""

    every: PositiveDuration | None = None
    schedule: str | None = None
    """A cron expression (five fields), in ``timezone``."""
    timezone: str = "UTC"
    grace: Duration = 300.0
    status: str = "COMPLETED"
    started_within: PositiveDuration | None = None
    """With ``schedule``: the run must also be created this soon after the fire time."""
    severity: Literal["failure", "warning", "info"] = "failure"

    @model_validator(mode="after")
    def _consistent(self) -> Expect:
        if (self.every is None) == (self.schedule is None):
            raise ValueError("give one of expect.every (a period) or expect.schedule (cron)")
        if self.status not in TRIGGER_STATUSES:
            raise ValueError(
                f"expect.status {self.status!r} is not a Trigger.dev status; "
                f"known: {', '.join(sorted(TRIGGER_STATUSES))}"
            )
        if self.every is not None:
            if self.started_within is not None:
                raise ValueError("expect.started_within applies to expect.schedule only")
            if self.grace >= self.every:
                raise ValueError(
                    f"expect.grace ({self.grace:g}s) must be shorter than expect.every "
                    f"({self.every:g}s)"
                )
            return self
        assert self.schedule is not None
        problem = schedule_error(self.schedule, self.timezone)
        if problem is not None:
            raise ValueError(f"expect: {problem}")
        fires = fire_times(self.schedule, self.timezone, datetime(2026, 1, 1, tzinfo=UTC), 50)
        gap = min((b - a).total_seconds() for a, b in pairwise(fires))
        if self.grace >= gap:
            raise ValueError(
                f"expect.grace ({self.grace:g}s) must be shorter than the time between two "
                f"runs of {self.schedule!r} (as little as {gap:g}s)"
            )
        return self

    def expectation(self) -> Expectation:
        """The expectation as the core takes it."""
        return Expectation(
            status=self.status,
            grace=self.grace,
            every=self.every,
            schedule=self.schedule,
            timezone=self.timezone,
            started_within=self.started_within,
            severity=Severity(self.severity),
        )


class TriggerRunsWatch(_WatchBase):
    """Every Trigger.dev run matching a filter, discovered by listing."""

    type: Literal["trigger_runs"]
    id: UpstreamId | None = None
    filter: TriggerRunsFilter = Field(default_factory=TriggerRunsFilter)
    mode: Literal["auto", "poll"] = "auto"
    """How the runs it follows are watched: as ``trigger_run``'s ``mode``; in ``auto``,
    new runs seen on the realtime feed also start a discovery pass early."""
    max_runs: int = Field(default=1000, ge=1, le=100_000)
    max_pages: int = Field(default=20, ge=1, le=1000)
    page_size: int = Field(default=100, ge=1, le=100)
    discovery_interval: PositiveDuration | None = None
    stuck_after: PositiveDuration | None = None
    deadlines: Deadlines | None = None
    """Deadlines of every run it follows."""
    expect: Expect | None = None

    @property
    def watch_id(self) -> str:
        """The configured id, else one derived from the filter (stable across restarts)."""
        if self.id:
            return self.id
        digest = hashlib.sha256(
            json.dumps(self.filter.model_dump(), sort_keys=True).encode()
        ).hexdigest()
        return f"runs-{digest[:10]}"

    def ref(self) -> WatchRef:
        """This watch's identity as carried by its events."""
        return WatchRef(WatchType.TRIGGER_RUNS, self.watch_id, self.name, freeze(self.labels))


WatchConfig = Annotated[
    ParallelTaskGroupWatch | ParallelTaskRunWatch | TriggerRunWatch | TriggerRunsWatch,
    Field(discriminator="type"),
]
