"""What the HTTP endpoints, the metrics and systemd see of the daemon: a read-only view.

:class:`DaemonView` is the narrow protocol they take instead of the daemon itself,
so neither can change it and none of them imports the module that builds it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from watcher.clock import Clock
from watcher.config.model import WatcherConfig
from watcher.core.diff import group_state
from watcher.core.sharding import Shard
from watcher.core.snapshots import GroupSnapshot
from watcher.core.watch import DiscoveryState, WatchState, describe
from watcher.daemon.api_watches import ApiWatch
from watcher.daemon.cluster import Cluster
from watcher.daemon.durability import Durability
from watcher.daemon.runtime import WatchRuntime
from watcher.daemon.watcher import Watcher
from watcher.notify.channel import NotifierChannel
from watcher.notify.dispatcher import Dispatcher

__all__ = [
    "DaemonView",
    "WatchCounts",
    "count_watches",
    "realtime_view",
    "status_line",
    "tally_watches",
    "watch_state",
    "watch_view",
    "watch_views",
]

WatchCounts = Counter[tuple[str, str, str]]
"""Watches by (source, kind, state)."""

_COUNT_CHUNK = 2_000


def tally_watches(runtimes: Sequence[WatchRuntime]) -> WatchCounts:
    """Watches by (source, kind, state), in one go."""
    return Counter((rt.source.value, rt.kind.value, watch_state(rt)) for rt in runtimes)


async def count_watches(registry: Mapping[str, WatchRuntime]) -> WatchCounts:
    """Watches by (source, kind, state), counted a chunk at a time: in one go, a scrape
    held the event loop for about 100 ms at 50,000 watches (``bench/ceiling.py``)."""
    runtimes = list(registry.values())
    counts: WatchCounts = Counter()
    for start in range(0, len(runtimes), _COUNT_CHUNK):
        counts.update(tally_watches(runtimes[start : start + _COUNT_CHUNK]))
        await anyio.lowlevel.checkpoint()
    return counts


class DaemonView(Protocol):
    """The daemon, read-only."""

    @property
    def config(self) -> WatcherConfig:
        """The configuration in force."""
        ...

    @property
    def clock(self) -> Clock:
        """The daemon's clock."""
        ...

    @property
    def shard(self) -> Shard:
        """This process's shard."""
        ...

    @property
    def watcher(self) -> Watcher | None:
        """The watches (None until built)."""
        ...

    @property
    def cluster(self) -> Cluster | None:
        """This replica's part in a cluster (None without ``cluster:``)."""
        ...

    @property
    def channels(self) -> Sequence[NotifierChannel]:
        """The notifiers."""
        ...

    @property
    def dispatcher(self) -> Dispatcher:
        """Routes, silences, conditions and their counters."""
        ...

    @property
    def durability(self) -> Durability:
        """The state file's health."""
        ...

    @property
    def api_watches(self) -> Mapping[str, ApiWatch]:
        """Watches the API added."""
        ...

    @property
    def is_ready(self) -> bool:
        """Every watch was polled once."""
        ...

    @property
    def reloads(self) -> int:
        """Reloads applied."""
        ...

    @property
    def started_at(self) -> float:
        """Unix time the daemon started."""
        ...

    def uptime(self) -> float:
        """Seconds since start."""
        ...

    def not_ready(self) -> list[str]:
        """Why ``/readyz`` fails (empty when ready)."""
        ...


def watch_state(rt: WatchRuntime) -> str:
    """``pending`` (not seen yet), ``ok``, ``error`` (cannot see, reported) or ``finished``."""
    if rt.finished_at is not None:
        return "finished"
    health = rt.state.health
    if health.reported is not None:
        return "error"
    if rt.last_ok_at is None:
        return "pending"
    return "ok"


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """One line of ``run-watcher once``."""

    key: str
    name: str
    state: str
    problem: str | None
    detail: str


def once_row(rt: WatchRuntime) -> WatchStatus:
    """Where a watch stands after ``once`` polled it, in the words of ``status``."""
    state = rt.state
    detail = (
        f"{len(state.seen)} matching runs" if isinstance(state, DiscoveryState) else describe(state)
    )
    last = state.health.last_problem
    healthy = state.health.healthy
    if (
        not healthy
        and last is not None
        and (isinstance(state, DiscoveryState) or state.snapshot is None)
    ):
        detail = f"cannot see: {last.kind.value}"  # as the log and status say it
    return WatchStatus(
        rt.key,
        rt.ref.display_name,
        watch_state(rt) if healthy else "error",
        last.message if last else None,
        detail,
    )


def status_line(view: DaemonView) -> str:
    """One line for ``systemctl status``: watches, errors, queued notifications."""
    watcher = view.watcher
    runtimes = list(watcher.registry.values()) if watcher is not None else []
    erroring = sum(1 for rt in runtimes if rt.problem is not None)
    queued = sum(c.queued() for c in view.channels)
    line = f"watching {len(runtimes)}, {erroring} erroring, {queued} notifications queued"
    if watcher is not None and not view.is_ready:
        line = f"first pass: {len(runtimes) - watcher.unpolled} of {len(runtimes)} polled; " + line
    if not view.durability.healthy:
        line += ", state file unavailable"
    if view.shard.count > 1:
        line += f" (shard {view.shard})"
    if view.cluster is not None:
        line += f" (cluster {view.cluster.name}: {view.cluster.standing().value}, "
        line += f"owns {len(view.cluster.held)})"
    return line


def _status(state: WatchState | DiscoveryState) -> str | None:
    snap = state.snapshot if isinstance(state, WatchState) else None
    if isinstance(snap, GroupSnapshot):
        return group_state(snap)
    return snap.status if snap is not None else None


def watch_view(view: DaemonView, key: str) -> dict[str, Any] | None:
    """One watch as ``/watches`` shows it."""
    watcher = view.watcher
    rt = watcher.registry.get(key) if watcher is not None else None
    if rt is None or watcher is None:
        return None
    now, wall = view.clock.now(), view.clock.wall().timestamp()

    def unix(moment: float | None) -> float | None:
        return None if moment is None else round(wall - (now - moment), 3)

    state = rt.state
    api = view.api_watches.get(key)
    problem = state.health.last_problem
    shown: dict[str, Any] = {
        "key": rt.key,
        "type": rt.ref.type.value,
        "id": rt.ref.id,
        "name": rt.ref.name,
        "labels": dict(rt.ref.labels),
        "origin": "api" if api is not None else "config",
        "state": watch_state(rt),
        "detail": (
            f"{len(state.seen)} runs seen, {len(rt.children or ())} followed"
            if isinstance(state, DiscoveryState)
            else describe(state)
        ),
        "status": _status(state),
        "watched_by": "realtime" if rt.pushed else "stream" if rt.streaming else "poll",
        "problem": problem.message if problem is not None else None,
        "polls": rt.polls,
        "errors": rt.errors,
        "interval": round(state.schedule.interval, 3),
        "last_poll_at": unix(rt.last_poll_at),
        "last_ok_at": unix(rt.last_ok_at),
        "expires_at": api.expires_at if api is not None else None,
    }
    if isinstance(state, WatchState) and isinstance(state.snapshot, GroupSnapshot):
        shown["counts"] = dict(state.snapshot.counts)
    return shown


def realtime_view(view: DaemonView) -> dict[str, Any] | None:
    """How the Trigger.dev realtime feed covers the followed runs (None without a feed)."""
    feed = view.watcher.realtime if view.watcher is not None else None
    if feed is None:
        return None
    streaming = feed.streaming()
    return {
        "streaming": streaming,
        "connections": (1 if streaming else 0) + feed.extra.live,
        "connection_budget": 1 + feed.extra.slots,
        "extra_shapes": sorted(spec.label for spec in feed.extra.readers),
        "covered": len(feed.covered),
        "uncovered": feed.uncovered(),
    }


def watch_views(view: DaemonView) -> list[dict[str, Any]]:
    """Every watch (not the runs a ``trigger_runs`` watch follows) for ``/watches``."""
    if view.watcher is None:
        return []
    keys = sorted(k for k, rt in view.watcher.registry.items() if rt.parent is None)
    return [v for k in keys if (v := watch_view(view, k)) is not None]
