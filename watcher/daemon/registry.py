"""The registry of watches: add, update and remove them (at start, on reload, through the
API), restore them from the state file, follow the runs discovery adopts, and retire
finished runs after their retention so memory follows the load, not the daemon's age.

Polling lives in :mod:`watcher.daemon.watcher`, whose ``Watcher`` is this registry
with the pollers that serve it.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio
import structlog

from watcher.clock import Clock
from watcher.config.model import PollingConfig, SourcesConfig, TriggerRunsWatch, WatchConfig
from watcher.core.codec import CodecError, discovery_from_dict, watch_state_from_dict
from watcher.core.coverage import Announced
from watcher.core.events import Event, WatchType
from watcher.core.health import counts_as_seen
from watcher.core.schedule import SchedulePolicy, initial_state
from watcher.core.sharding import Ownership, Shard
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source
from watcher.core.watch import DiscoveryState, WatchState, new_watch_state
from watcher.daemon.realtime import RealtimeFeed
from watcher.daemon.runtime import Kind, WatchRuntime
from watcher.daemon.scheduler import SourceScheduler
from watcher.daemon.state import Stored, WatchWrite
from watcher.daemon.streams import GroupStreams, may_stream
from watcher.sources.gate import SourceGate, Ticket
from watcher.upstreams.plugin import Links, SourceClient

__all__ = ["Publish", "WatchRegistry"]

log = structlog.get_logger("watcher.poll")

Publish = Callable[[Sequence[Event], Sequence[WatchWrite]], Awaitable[None]]
"""Persist the watch writes and the events' outbox rows, then deliver the events."""

_C = TypeVar("_C")

_KINDS = {
    WatchType.PARALLEL_TASK_GROUP: Kind.GROUP,
    WatchType.PARALLEL_TASK_RUN: Kind.RUN,
    WatchType.TRIGGER_RUN: Kind.RUN,
    WatchType.TRIGGER_RUNS: Kind.DISCOVERY,
}


async def _discard(events: Sequence[Event], writes: Sequence[WatchWrite]) -> None:
    return None


class WatchRegistry:
    """The watches, their runtimes and schedules, and the clients that serve them."""

    def __init__(
        self,
        *,
        polling: PollingConfig,
        sources: SourcesConfig,
        clock: Clock,
        rng: random.Random,
        gates: dict[Source, SourceGate],
        clients: Mapping[Source, SourceClient],
        workers: dict[Source, int],
        publish: Publish = _discard,
        retention: float = 86400.0,
        shard: Ownership | None = None,
        persist: bool = True,
    ) -> None:
        self.polling = polling
        self.sources = sources
        self.links: dict[tuple[Source, WatchType], Links] = {}
        """Each kind of watch's link templates, read once from ``sources``."""
        self.clock = clock
        self.rng = rng
        self.publish = publish
        self.retention = retention
        self.clients = clients
        self.registry: dict[str, WatchRuntime] = {}
        self.configs: dict[str, WatchConfig] = {}
        self.revision = 0
        """Counts additions, removals and config changes (what caches of the registry key on)."""
        self.announced = Announced()
        """Shared changes already published: a run covered by several watches is one event."""
        self._discovery_keys: tuple[str, ...] | None = None
        self.schedulers = {
            source: SourceScheduler(
                source.value, gate, self.poll, workers=workers[source], clock=clock
            )
            for source, gate in gates.items()
        }
        self.first_pass = anyio.Event()
        self.started_at: datetime = clock.wall()
        self.events_published = 0
        self.retired = 0
        self.shard: Ownership = shard or Shard()
        self.persist = persist
        """Whether states go to a state file; without one, polls skip serialising them."""
        self.on_poll: Callable[[WatchRuntime, float], None] | None = None
        """Called after every poll with the runtime and the poll's duration (metrics)."""
        self.last_ok_wall: dict[Source, float] = {}
        """Unix time of the last successful poll, per upstream."""
        self._unpolled: set[str] = set()
        self.dormant: set[str] = set()
        """Watches another process owns now: not polled until :meth:`wake`."""
        self.streams: GroupStreams | None = None
        self.realtime: RealtimeFeed | None = None
        """The Trigger.dev environment's realtime feed (set by the daemon when it is on)."""
        self.on_added: Callable[[WatchRuntime], None] | None = None
        """Told of every runtime added (the realtime feed learns of runs to follow)."""
        """Group event streams (set by the daemon when Parallel is in use)."""

    # -- policies -----------------------------------------------------------------------

    def _run_policy(self, watch: WatchConfig) -> SchedulePolicy:
        """Adaptive polling of one run or group, with the watch's own overrides."""
        lo = watch.min_interval or self.polling.min_interval
        ceiling = self.polling.max_interval
        if watch.ref().source is Source.PARALLEL:
            # Parallel's status reads are not rate-limited: an idle run is seen sooner.
            ceiling = min(ceiling, self.sources.parallel.max_interval)
        hi = max(lo, watch.max_interval or ceiling)
        return SchedulePolicy(
            min_interval=lo,
            max_interval=hi,
            backoff=self.polling.backoff,
            jitter=self.polling.jitter,
        )

    def _policy(self, watch: WatchConfig) -> SchedulePolicy:
        """A watch's policy; discovery passes run at a fixed pace (no growth)."""
        policy = self._run_policy(watch)
        if isinstance(watch, TriggerRunsWatch):
            every = watch.discovery_interval or self.polling.discovery_interval
            return SchedulePolicy(
                min_interval=every,
                max_interval=max(every, policy.max_interval),
                backoff=1.0,
                jitter=self.polling.jitter,
            )
        return policy

    # -- registry -----------------------------------------------------------------------

    @property
    def unpolled(self) -> int:
        """Watches not polled once yet (the first pass waits for them)."""
        return len(self._unpolled)

    def can_poll(self, source: Source) -> bool:
        """Whether this upstream has a client (its key was set at start)."""
        return source in self.clients

    def _client(self, source: Source, capability: type[_C]) -> _C:
        """``source``'s client, as the class that has ``capability`` (groups, discovery)."""
        client = self.clients.get(source)
        if not isinstance(client, capability):
            raise AssertionError(f"{source.value} has no {capability.__name__}")
        return client

    def mine(self, watches: Sequence[WatchConfig]) -> list[WatchConfig]:
        """The watches this shard polls. ``trigger_runs`` watches list on every shard;
        the runs they discover are sharded one by one."""
        return [
            w for w in watches if isinstance(w, TriggerRunsWatch) or self.shard.adopts(w.ref().key)
        ]

    def add(self, watch: WatchConfig) -> WatchRuntime:
        """Register a configured watch and schedule its first poll now."""
        ref = watch.ref()
        policy = self._policy(watch)
        kind = _KINDS[ref.type]
        state: WatchState | DiscoveryState
        if kind is Kind.DISCOVERY:
            state = DiscoveryState(schedule=initial_state(policy))
        else:
            state = new_watch_state(policy, announce=watch.notify_initial)
        rt = WatchRuntime(
            key=ref.key, ref=ref, kind=kind, subject_id=ref.id, policy=policy, state=state
        )
        self.registry[rt.key] = rt
        self.configs[rt.key] = watch
        self.revision += 1
        self._discovery_keys = None
        self._unpolled.add(rt.key)
        self.schedulers[rt.source].schedule(rt, 0.0)
        if self.on_added is not None:
            self.on_added(rt)
        return rt

    def remove(self, key: str) -> list[WatchWrite]:
        """Stop polling a watch and forget it (and its discovered runs); return the deletions."""
        rt = self.registry.pop(key, None)
        if rt is None:
            return []
        rt.removed = True
        self.revision += 1
        self.configs.pop(key, None)
        self._discovery_keys = None
        if self.streams is not None:
            self.streams.close(key)
        writes = [WatchWrite(key, rt.subject_id, None)]
        for child in list(rt.children or ()):
            writes += self.remove(child)
        if rt.parent and (parent := self.registry.get(rt.parent)):
            (parent.children or set()).discard(key)
        self._mark_polled(key)
        return writes

    def update(self, watch: WatchConfig) -> None:
        """Apply a changed config to a watch that keeps its key: its state and schedule stay."""
        rt = self.registry.get(watch.ref().key)
        if rt is None:
            return
        self.configs[rt.key] = watch
        self.revision += 1
        rt.ref = watch.ref()
        rt.policy = self._policy(watch)
        if self.streams is not None and not may_stream(watch):
            self.streams.close(rt.key)
        for child in rt.children or ():
            if (c := self.registry.get(child)) is not None:
                c.ref = rt.ref
                c.policy = self._run_policy(watch)

    def reconfigure(
        self, watches: Sequence[WatchConfig], polling: PollingConfig
    ) -> list[WatchWrite]:
        """Make the registry match a new watch list (reload); return the state deletions."""
        self.polling = polling
        wanted = {w.ref().key: w for w in watches}
        writes: list[WatchWrite] = []
        for key in [k for k, rt in self.registry.items() if rt.parent is None and k not in wanted]:
            log.info("watch removed by reload; polling stops", watch=key)
            writes += self.remove(key)
        for key, watch in wanted.items():
            if key not in self.registry:
                if not self.can_poll(watch.ref().source):
                    log.warning(
                        "watch of an upstream not in use at start: restart to add it", watch=key
                    )
                    continue
                log.info("watch added by reload", watch=key)
                self.add(watch)
            elif self.configs.get(key) != watch:
                log.info("watch changed by reload; its state is kept", watch=key)
                self.update(watch)
        return writes

    def _mark_polled(self, key: str) -> None:
        self._unpolled.discard(key)
        if not self._unpolled:
            self.first_pass.set()

    def _seen(self, rt: WatchRuntime) -> None:
        """Count ``rt`` for the first pass when core says it is done (``counts_as_seen``)."""
        if counts_as_seen(rt.state.health):
            self._mark_polled(rt.key)

    # -- restore --------------------------------------------------------------------------

    def restore(self, stored: Stored) -> list[WatchWrite]:
        """Take back the stored states of configured watches and their discovered runs.

        Each restored watch is polled at once; what changed while the daemon was
        down is notified then, marked ``seen_late``. Stored watches that are no
        longer configured are forgotten; the returned writes delete them.
        """
        restored = 0
        writes: list[WatchWrite] = []
        for key, (parent, subject, data, finished_at) in stored.watches.items():
            owner = self.registry.get(parent or key)
            if owner is None:
                writes.append(WatchWrite(key, subject, None))
                continue
            try:
                if parent is None:
                    self._restore_own(owner, data, finished_at)
                else:
                    watch = self.configs[owner.key]
                    assert isinstance(watch, TriggerRunsWatch)
                    child = self._child(
                        owner,
                        watch,
                        subject,
                        state=watch_state_from_dict(data, self._run_policy(watch)),
                    )
                    child.saved = data
                    child.restored = True
                    child.finished_at = finished_at
                    if finished_at is None:
                        self.schedulers[child.source].schedule(
                            child, self.rng.uniform(0, child.policy.min_interval)
                        )
            except CodecError as exc:
                log.warning(
                    "stored state not usable; the watch starts afresh", watch=key, error=str(exc)
                )
                continue
            restored += 1
        if restored:
            log.info("watch states restored from the state file", watches=restored)
        return writes

    def acts_on(self, rt: WatchRuntime) -> bool:
        """Whether this process polls ``rt`` and publishes what it finds (its shard's, or
        its lease in a cluster)."""
        if rt.parent is None:
            return self.shard.owns(rt.key)
        return self.shard.follows(rt.key, rt.subject_id)

    def take_state(self, key: str, data: dict[str, Any], finished_at: float | None) -> bool:
        """Take over ``key`` with the state another replica left (a cluster takeover); a
        change made meanwhile is announced once, ``seen_late``. False when not usable."""
        rt = self.registry.get(key)
        if rt is None:
            return False
        try:
            if rt.parent is None:
                self._restore_own(rt, data, finished_at)
            else:
                watch = self.configs[rt.parent]
                rt.state = watch_state_from_dict(data, self._run_policy(watch))
                rt.saved, rt.restored, rt.finished_at = dict(data), True, finished_at
        except CodecError as exc:
            log.warning(
                "shared state not usable; the watch starts afresh", watch=key, error=str(exc)
            )
            return False
        return True

    def wake(self, keys: Iterable[str]) -> None:
        """Poll now the ``keys`` that were left dormant (another replica owned them)."""
        for key in keys:
            if key in self.dormant and (rt := self.registry.get(key)) is not None:
                self.dormant.discard(key)
                if not rt.removed and rt.finished_at is None:
                    self.schedulers[rt.source].schedule(rt, 0.0)

    def _restore_own(
        self, rt: WatchRuntime, data: dict[str, object], finished_at: float | None
    ) -> None:
        state: WatchState | DiscoveryState
        if rt.kind is Kind.DISCOVERY:
            state = discovery_from_dict(data, rt.policy)
        else:
            state = watch_state_from_dict(data, rt.policy)
        rt.state = state
        rt.saved = dict(data)
        rt.restored = True
        rt.finished_at = finished_at

    async def poll(self, rt: WatchRuntime, ticket: Ticket) -> None:
        """Poll ``rt`` once (the pollers in :class:`~watcher.daemon.watcher.Watcher`)."""
        raise NotImplementedError

    # -- retention ------------------------------------------------------------------------

    def sweep(self, now: float) -> list[WatchWrite]:
        """Retire runs finished more than ``retention`` ago (``now``: Unix time).

        Discovered runs leave memory and the state file; configured watches leave
        memory but keep their final state on disk, so a restart does not report
        them again.
        """
        writes: list[WatchWrite] = []
        for key, rt in list(self.registry.items()):
            if rt.finished_at is None or now - rt.finished_at < self.retention:
                continue
            self.retired += 1
            if rt.parent is not None:
                writes += self.remove(key)
            else:
                self.registry.pop(key, None)
                rt.removed = True
        return writes

    # -- discovered runs --------------------------------------------------------------------

    def _child(
        self, parent: WatchRuntime, watch: TriggerRunsWatch, run_id: str, state: WatchState
    ) -> WatchRuntime:
        key = f"{parent.key}/{run_id}"
        child = WatchRuntime(
            key=key,
            ref=parent.ref,
            kind=Kind.RUN,
            subject_id=run_id,
            policy=self._run_policy(watch),
            state=state,
            parent=parent.key,
        )
        self.registry[key] = child
        if parent.children is None:
            parent.children = set()
        parent.children.add(key)
        return child

    def _adopt(
        self, parent: WatchRuntime, watch: TriggerRunsWatch, run: RunSnapshot, *, announce: bool
    ) -> WatchRuntime:
        """Watch a discovered run as a watch of its own (``plan_adoption`` chose it)."""
        policy = self._run_policy(watch)
        state = new_watch_state(policy, announce=announce, snapshot=None if announce else run)
        child = self._child(parent, watch, run.run_id, state)
        delay = 0.0 if announce else self.rng.uniform(0, policy.min_interval)
        self.schedulers[Source.TRIGGER].schedule(child, delay)
        if self.on_added is not None:
            self.on_added(child)
        return child
