"""The YAML configuration, as pydantic models. Unknown keys are errors.

Durations are seconds (floats) after validation; the file may say ``"500ms"``,
``"2s"``, ``"5m"``, ``"1h"`` or a plain number of seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from watcher.core.durations import parse_duration
from watcher.core.events import EventKind, WatchRef, WatchType, freeze
from watcher.core.ids import validate_id
from watcher.core.routing import MATCH_FIELDS
from watcher.core.statuses import TRIGGER_STATUSES, Severity, Source

__all__ = [
    "DeliveryConfig",
    "Duration",
    "NotifierConfig",
    "PollingConfig",
    "RouteConfig",
    "SourcesConfig",
    "WatchConfig",
    "WatcherConfig",
]

Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
UpstreamId = Annotated[str, BeforeValidator(lambda v: validate_id(v) if isinstance(v, str) else v)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PollingConfig(Strict):
    """How often to poll. Per-watch ``min_interval``/``max_interval`` override these."""

    min_interval: PositiveDuration = 2.0
    max_interval: PositiveDuration = 300.0
    discovery_interval: PositiveDuration = 30.0
    backoff: float = Field(default=1.5, ge=1.0, le=10.0)
    jitter: float = Field(default=0.1, ge=0.0, lt=1.0)
    error_threshold: int = Field(default=3, ge=1, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> PollingConfig:
        if self.max_interval < self.min_interval:
            raise ValueError("max_interval must be at least min_interval")
        return self


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


class ParallelTaskRunWatch(_SingleWatch):
    """A single Parallel task run."""

    type: Literal["parallel_task_run"]


class TriggerRunWatch(_SingleWatch):
    """A single Trigger.dev run."""

    type: Literal["trigger_run"]


class TriggerRunsFilter(Strict):
    """``filter[...]`` of Trigger.dev's list endpoint."""

    status: list[str] = Field(default_factory=list)
    task: list[str] = Field(default_factory=list)
    tag: list[str] = Field(default_factory=list)
    version: list[str] = Field(default_factory=list)
    queue: list[str] = Field(default_factory=list)
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


class TriggerRunsWatch(_WatchBase):
    """Every Trigger.dev run matching a filter, discovered by listing."""

    type: Literal["trigger_runs"]
    id: UpstreamId | None = None
    filter: TriggerRunsFilter = Field(default_factory=TriggerRunsFilter)
    max_runs: int = Field(default=1000, ge=1, le=100_000)
    max_pages: int = Field(default=20, ge=1, le=1000)
    page_size: int = Field(default=100, ge=1, le=100)
    discovery_interval: PositiveDuration | None = None

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


class NotifierConfig(Strict):
    """An apprise URL with tags. Give the URL inline, from an env var or from a file."""

    url: SecretStr | None = None
    url_env: str | None = None
    url_file: Path | None = None
    tags: list[str] = Field(default_factory=list)
    format: Literal["text", "json"] = "text"
    name: str | None = None

    @model_validator(mode="after")
    def _one_url(self) -> NotifierConfig:
        given = [k for k in ("url", "url_env", "url_file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of url, url_env, url_file")
        return self

    def resolve_url(self) -> str:
        """The apprise URL itself (a secret: never log it)."""
        if self.url is not None:
            return self.url.get_secret_value()
        if self.url_env is not None:
            value = os.environ.get(self.url_env)
            if not value:
                raise ValueError(f"environment variable {self.url_env} is not set")
            return value.strip()
        assert self.url_file is not None
        try:
            return self.url_file.read_text().strip()
        except OSError as exc:
            raise ValueError(
                f"cannot read url_file {str(self.url_file)!r}: {exc.strerror}"
            ) from None


_ENUM_VALUES: dict[str, frozenset[str]] = {
    "source": frozenset(s.value for s in Source),
    "kind": frozenset(k.value for k in EventKind),
    "severity": frozenset(s.value for s in Severity),
    "watch.type": frozenset(t.value for t in WatchType),
}


class RouteConfig(Strict):
    """``match`` fields (a list means any of) and the notifier tags to send to."""

    match: dict[str, str | list[str] | dict[str, str | list[str]]] = Field(default_factory=dict)
    notify: list[str] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")

    @field_validator("match")
    @classmethod
    def _fields(cls, match: dict[str, Any]) -> dict[str, Any]:
        for key, value in match.items():
            if key == "labels":
                if not isinstance(value, dict):
                    raise ValueError("labels: expected a mapping of label name to value(s)")
                continue
            if isinstance(value, dict):
                raise ValueError(f"{key}: expected a value or a list of values")
            if key not in MATCH_FIELDS and not key.startswith("labels."):
                raise ValueError(
                    f"unknown match field {key!r}; use one of {', '.join(sorted(MATCH_FIELDS))} "
                    "or labels.<name>"
                )
            allowed = _ENUM_VALUES.get(key)
            values = [value] if isinstance(value, str) else value
            if allowed is not None:
                bad = [v for v in values if v not in allowed]
                if bad:
                    raise ValueError(
                        f"{key}: unknown value {', '.join(map(repr, bad))}; "
                        f"use {', '.join(sorted(allowed))}"
                    )
        return match

    def matchers(self) -> dict[str, frozenset[str]]:
        """The match as field -> accepted values, labels flattened to ``labels.<x>``."""
        out: dict[str, frozenset[str]] = {}
        for key, value in self.match.items():
            if isinstance(value, dict):
                for label, accepted in value.items():
                    out[f"labels.{label}"] = frozenset(
                        [accepted] if isinstance(accepted, str) else accepted
                    )
            else:
                out[key] = frozenset([value] if isinstance(value, str) else value)
        return out


class _SourceBase(Strict):
    base_url: str | None = None
    connect_timeout: PositiveDuration = 5.0
    timeout: PositiveDuration = 15.0
    total_timeout: PositiveDuration = 30.0
    max_concurrency: int = Field(default=10, ge=1, le=1000)
    requests_per_minute: float = Field(gt=0)
    burst: int = Field(ge=1)
    reserve: int = Field(default=0, ge=0)
    run_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/") if value else value


class ParallelSourceConfig(_SourceBase):
    """Parallel: API prefix (``/v1``; ``/v1beta`` for the legacy paths), budget, links."""

    api_prefix: Literal["/v1", "/v1beta"] = "/v1"
    requests_per_minute: float = Field(default=600, gt=0)
    burst: int = Field(default=50, ge=1)
    group_url: str | None = None
    max_stream_events: int = Field(default=10_000, ge=1)
    stream_timeout: PositiveDuration = 60.0
    stream_idle_timeout: PositiveDuration = 5.0


class TriggerSourceConfig(_SourceBase):
    """Trigger.dev: API version header, budget (documented limit: 1,500/min), links."""

    api_version: str = Field(default="2025-07-16", pattern=r"^\d{4}-\d{2}-\d{2}$")
    requests_per_minute: float = Field(default=1200, gt=0)
    burst: int = Field(default=100, ge=1)
    reserve: int = Field(default=25, ge=0)
    run_url: str | None = "https://cloud.trigger.dev/runs/{id}"


class SourcesConfig(Strict):
    """Per-upstream settings."""

    parallel: ParallelSourceConfig = Field(default_factory=ParallelSourceConfig)
    trigger: TriggerSourceConfig = Field(default_factory=TriggerSourceConfig)


class DeliveryConfig(Strict):
    """Sending: per-attempt timeout, retries, queue bound, drain deadline at shutdown."""

    timeout: PositiveDuration = 15.0
    max_attempts: int = Field(default=5, ge=1, le=50)
    initial_backoff: PositiveDuration = 1.0
    max_backoff: PositiveDuration = 60.0
    queue_size: int = Field(default=10_000, ge=1)
    drain_timeout: Duration = 10.0
    batch_max: int = Field(default=50, ge=1, le=1000)


class WatcherConfig(Strict):
    """The whole configuration file."""

    polling: PollingConfig = Field(default_factory=PollingConfig)
    watches: list[WatchConfig] = Field(default_factory=list)
    notifiers: list[NotifierConfig] = Field(default_factory=list)
    routes: list[RouteConfig] | None = None
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)

    @model_validator(mode="after")
    def _consistent(self) -> WatcherConfig:
        keys: dict[str, int] = {}
        for index, watch in enumerate(self.watches):
            key = watch.ref().key
            if key in keys:
                raise ValueError(f"watches[{index}] repeats watches[{keys[key]}] ({key})")
            keys[key] = index
        if self.routes is not None:
            known = {tag for n in self.notifiers for tag in n.tags}
            for index, route in enumerate(self.routes):
                missing = [t for t in route.notify if t not in known]
                if missing:
                    raise ValueError(
                        f"routes[{index}].notify: no notifier has tag {', '.join(map(repr, missing))}"
                    )
        return self

    def sources_used(self) -> set[Source]:
        """Which upstreams the watches need."""
        return {watch.ref().source for watch in self.watches}
