"""The YAML configuration as a whole, as pydantic models. Unknown keys are errors.

Durations are seconds (floats) after validation; the file may say ``"500ms"``,
``"2s"``, ``"5m"``, ``"1h"`` or a plain number of seconds. The sections live in
:mod:`watcher.config.watches` and :mod:`watcher.config.notifications`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from watcher.config.base import ApiVersion, Duration, PositiveDuration, Strict
from watcher.config.cluster import ClusterConfig
from watcher.config.notifications import (
    NotificationsConfig,
    NotifierConfig,
    RouteConfig,
    SilenceConfig,
)
from watcher.config.operations import HttpConfig, ShardConfig
from watcher.config.watches import (
    ParallelTaskGroupWatch,
    ParallelTaskRunWatch,
    TriggerRunsFilter,
    TriggerRunsWatch,
    TriggerRunWatch,
    WatchConfig,
)
from watcher.core.statuses import TRIGGER_CURRENT_API_VERSION, Source

__all__ = [
    "DeliveryConfig",
    "HttpConfig",
    "NotificationsConfig",
    "NotifierConfig",
    "ParallelTaskGroupWatch",
    "ParallelTaskRunWatch",
    "PollingConfig",
    "RouteConfig",
    "ShardConfig",
    "SilenceConfig",
    "SourceOptions",
    "SourcesConfig",
    "TriggerRunWatch",
    "TriggerRunsFilter",
    "TriggerRunsWatch",
    "WatchConfig",
    "WatcherConfig",
]


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


class SourceOptions(Strict):
    """What every upstream's section of ``sources:`` holds."""

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


class ParallelSourceConfig(SourceOptions):
    """Parallel: API prefix (``/v1``; ``/v1beta`` for the legacy paths), budget, links."""

    api_prefix: Literal["/v1", "/v1beta"] = "/v1"
    max_interval: PositiveDuration = 30.0
    """Ceiling of a Parallel watch's interval while idle (below ``polling.max_interval``;
    a watch's own ``max_interval`` wins): status reads are not rate-limited, so a run
    that fails after an hour of quiet is reported within this, not five minutes."""
    # Parallel documents no limit on status reads (only on run creation): enough for
    # 10,000 idle watches at the 30 s ceiling, and a cap, not a pace.
    requests_per_minute: float = Field(default=20_000, gt=0)
    burst: int = Field(default=100, ge=1)
    group_url: str | None = None
    max_stream_events: int = Field(default=10_000, ge=1)
    max_streams: int = Field(default=20, ge=0, le=1000)
    """Group event streams held open at once (0: none); the other groups are polled."""
    events_idle_timeout: PositiveDuration = 120.0
    """Reconnect an event stream that sent nothing for this long."""
    events_max_age: PositiveDuration = 3600.0
    """Reconnect an event stream after this long (Parallel closes them after an hour)."""
    stream_retry_after: PositiveDuration = 600.0
    """After a refused stream (or three failures in a row), poll this long before retrying."""
    stream_timeout: PositiveDuration = 60.0
    stream_idle_timeout: PositiveDuration = 5.0


class TriggerSourceConfig(SourceOptions):
    """Trigger.dev: API version header, budget (documented limit: 1,500/min, shared with the
    user's own application), links, the realtime feed."""

    api_version: ApiVersion = TRIGGER_CURRENT_API_VERSION
    """``x-trigger-api-version``: ``2025-07-16`` (current statuses) or ``legacy`` (no
    header, the legacy statuses). Any other value would silently get the legacy set."""
    # 40% of the environment's limit: with the realtime feed carrying the load, polls are
    # cross-checks and reads of changed runs; the rest stays with the owner's application.
    requests_per_minute: float = Field(default=600, gt=0)
    burst: int = Field(default=100, ge=1)
    reserve: int = Field(default=25, ge=0)
    run_url: str | None = "https://cloud.trigger.dev/runs/{id}"
    realtime: bool = True
    """Follow the runs of watches in ``mode: auto`` on the environment's realtime feed (one
    long-poll connection for every run; not counted by the ``/api`` rate limit). Only with
    ``api_version: 2025-07-16``: the feed's statuses are the current set."""
    realtime_window: PositiveDuration = 86400.0
    """The feed holds runs created this long before it connects (the provider caps it at a
    day); older runs are polled."""
    realtime_rotate: PositiveDuration = 3600.0
    """Re-read the feed from a fresh snapshot this often: the window follows the clock,
    and every run the snapshot holds is checked against what its watch last saw."""
    realtime_cross_check: PositiveDuration = 7200.0
    """Poll each run the feed holds this often anyway (the snapshots check them hourly)."""
    realtime_long_poll: PositiveDuration = 20.0
    """How long the server may hold a live request (Electric's default, 20 s)."""
    realtime_retry_after: PositiveDuration = 600.0
    """After the feed was refused (401/403/404) or kept failing, poll this long before
    trying again."""
    realtime_connections: int = Field(default=5, ge=1, le=500)
    """Long-poll connections the feed may hold at once: the environment's shape, plus
    extra shapes (by tag, or one per run) for the runs it leaves out. 5 is half the Free
    plan's limit of 10 concurrent realtime connections, which the application's own
    subscriptions share; raise it on Hobby (50) or Pro (500+)."""
    realtime_cap: int = Field(default=1000, ge=1)
    """Runs a multi-run shape holds at most (the provider's newer backend: 1,000, without
    saying so): a tag shape expected to hold more is not chosen."""


class SourcesConfig(Strict):
    """Per-upstream settings."""

    parallel: ParallelSourceConfig = Field(default_factory=ParallelSourceConfig)
    trigger: TriggerSourceConfig = Field(default_factory=TriggerSourceConfig)


class DeliveryConfig(Strict):
    """Sending: per-attempt timeout, retries (capped by count and time), bounds, drain."""

    timeout: PositiveDuration = 15.0
    connect_timeout: PositiveDuration = 5.0
    max_attempts: int = Field(default=20, ge=1, le=1000)
    retry_for: PositiveDuration = 900.0
    initial_backoff: PositiveDuration = 1.0
    max_backoff: PositiveDuration = 30.0
    queue_size: int = Field(default=20_000, ge=1)
    json_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    concurrency: int = Field(default=4, ge=1, le=64)
    """Sends in flight at once per notifier (each message retries on its own schedule)."""
    drain_timeout: Duration = 10.0


class HeartbeatConfig(Strict):
    """A "watcher alive" message on a schedule, for a dead-man's switch."""

    notify: list[str] = Field(min_length=1)
    """Tags of the notifiers that get it (for example a healthchecks-style ping URL)."""
    interval: PositiveDuration = 3600.0


class WatcherConfig(Strict):
    """The whole configuration file."""

    state_file: Path | None = None
    """SQLite checkpoint of watch states and the notification outbox (off when unset)."""
    retention: Duration = 86400.0
    """How long finished runs stay in memory (and discovered ones in the state file)."""
    polling: PollingConfig = Field(default_factory=PollingConfig)
    watches: list[WatchConfig] = Field(default_factory=list)
    notifiers: list[NotifierConfig] = Field(default_factory=list)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    routes: list[RouteConfig] | None = None
    silences: list[SilenceConfig] = Field(default_factory=list)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    shard: ShardConfig = Field(default_factory=ShardConfig)
    cluster: ClusterConfig | None = None
    """Replicas on Redis (see the README's "Cluster"); without it, one process and its
    state file."""
    heartbeat: HeartbeatConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> WatcherConfig:
        if self.cluster is not None and (self.shard.count > 1 or self.shard.index is not None):
            raise ValueError(
                "shard and cluster together: a cluster assigns the watches to its live "
                "members itself (and moves them when one dies); remove shard (or "
                "WATCHER_SHARD)"
            )
        keys: dict[str, int] = {}
        for index, watch in enumerate(self.watches):
            key = watch.ref().key
            if key in keys:
                raise ValueError(f"watches[{index}] repeats watches[{keys[key]}] ({key})")
            keys[key] = index
            if isinstance(watch, TriggerRunsWatch):
                watch.filter.check_statuses(self.sources.trigger.api_version, f"watches[{index}]")
        known = {tag for n in self.notifiers for tag in n.tags}
        names = {n.name for n in self.notifiers if n.name}
        for index, route in enumerate(self.routes or []):
            missing = sorted(route.tags() - known)
            if missing:
                raise ValueError(
                    f"routes[{index}]: no notifier has tag {', '.join(map(repr, missing))}"
                )
            unknown = sorted(route.escalation_names() - known - names)
            if unknown:
                raise ValueError(
                    f"routes[{index}].escalate: no notifier is named or tagged "
                    f"{', '.join(map(repr, unknown))}"
                )
        if self.heartbeat is not None and not set(self.heartbeat.notify) & known:
            raise ValueError(
                f"heartbeat.notify: no notifier has tag "
                f"{', '.join(map(repr, self.heartbeat.notify))}"
            )
        return self

    def sources_used(self) -> set[Source]:
        """Which upstreams the watches need."""
        return {watch.ref().source for watch in self.watches}
