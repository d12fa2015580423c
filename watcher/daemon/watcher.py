"""Polling: fetch -> pure step -> publish (persist, then deliver) -> schedule next.

The registry of watches lives here too: adding and removing watches (at start and
on reload), restoring them from the state file, and retiring finished runs after
their retention period so memory follows the load, not the daemon's age.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

import anyio
import structlog

from watcher.clock import Clock
from watcher.config.model import PollingConfig, SourcesConfig, TriggerRunsWatch, WatchConfig
from watcher.core.codec import (
    CodecError,
    discovery_from_dict,
    durable_part,
    watch_state_from_dict,
)
from watcher.core.coverage import SHARED_KINDS, Announced, merge_watches
from watcher.core.diff import diff_run
from watcher.core.discovery import plan_adoption
from watcher.core.events import Event, WatchRef, WatchType
from watcher.core.health import Problem, counts_as_seen
from watcher.core.schedule import SchedulePolicy, initial_state
from watcher.core.sharding import Shard
from watcher.core.snapshots import FailedRun, GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import ParallelStatus, Source, classify
from watcher.core.watch import (
    DiscoveryState,
    DiscoveryStep,
    Listing,
    Step,
    StepContext,
    WatchState,
    mark_late,
    needs_failed_runs,
    new_watch_state,
    step_discovery,
    step_discovery_failure,
    step_failure,
    step_group,
    step_run,
)
from watcher.daemon.runtime import Kind, WatchRuntime
from watcher.daemon.scheduler import SourceScheduler
from watcher.daemon.state import Stored, WatchWrite
from watcher.daemon.streams import GroupStreams, may_stream
from watcher.sources.errors import SourceError
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.parallel import ParallelClient
from watcher.sources.trigger import TriggerClient
from watcher.upstreams.plugin import Links, SourceClient
from watcher.upstreams.registry import PLUGINS, plugin_for

__all__ = ["Publish", "Watcher"]

log = structlog.get_logger("watcher.poll")

Publish = Callable[[Sequence[Event], Sequence[WatchWrite]], Awaitable[None]]
"""Persist the watch writes and the events' outbox rows, then deliver the events."""

_C = TypeVar("_C")

STREAM_RECHECK = 1.0
"""Seconds before a cross-check poll that disagreed with a group's stream looks again."""

_KINDS = {
    WatchType.PARALLEL_TASK_GROUP: Kind.GROUP,
    WatchType.PARALLEL_TASK_RUN: Kind.RUN,
    WatchType.TRIGGER_RUN: Kind.RUN,
    WatchType.TRIGGER_RUNS: Kind.DISCOVERY,
}


async def _discard(events: Sequence[Event], writes: Sequence[WatchWrite]) -> None:
    return None


class Watcher:
    """The registry of watches and the pollers that serve them."""

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
        shard: Shard | None = None,
        persist: bool = True,
    ) -> None:
        self.polling = polling
        self.sources = sources
        self.clock = clock
        self.rng = rng
        self.publish = publish
        self.retention = retention
        self.clients = clients
        self.registry: dict[str, WatchRuntime] = {}
        self.configs: dict[str, WatchConfig] = {}
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
        self.shard = shard or Shard()
        self.persist = persist
        """Whether states go to a state file; without one, polls skip serialising them."""
        self.on_poll: Callable[[WatchRuntime, float], None] | None = None
        """Called after every poll with the runtime and the poll's duration (metrics)."""
        self.last_ok_wall: dict[Source, float] = {}
        """Unix time of the last successful poll, per upstream."""
        self._unpolled: set[str] = set()
        self.streams: GroupStreams | None = None
        """Group event streams (set by the daemon when Parallel is in use)."""

    # -- policies -----------------------------------------------------------------------

    def _run_policy(self, watch: WatchConfig) -> SchedulePolicy:
        """Adaptive polling of one run or group, with the watch's own overrides."""
        lo = watch.min_interval or self.polling.min_interval
        hi = max(lo, watch.max_interval or self.polling.max_interval)
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
            w for w in watches if isinstance(w, TriggerRunsWatch) or self.shard.owns(w.ref().key)
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
        self._discovery_keys = None
        self._unpolled.add(rt.key)
        self.schedulers[rt.source].schedule(rt, 0.0)
        return rt

    def remove(self, key: str) -> list[WatchWrite]:
        """Stop polling a watch and forget it (and its discovered runs); return the deletions."""
        rt = self.registry.pop(key, None)
        if rt is None:
            return []
        rt.removed = True
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

    # -- polling --------------------------------------------------------------------------

    def _context(self, rt: WatchRuntime) -> StepContext:
        links = (
            plugin_for(rt.source).links(self.sources, rt.ref.type)
            if rt.source in PLUGINS
            else Links(None, None)
        )
        config = self.configs.get(rt.parent or rt.key)
        return StepContext(
            watch=rt.ref,
            observed_at=self.clock.wall(),
            policy=rt.policy,
            rng=self.rng,
            error_threshold=self.polling.error_threshold,
            url_template=links.url,
            run_url_template=links.run_url,
            stuck_after=getattr(config, "stuck_after", None),
        )

    async def poll(self, rt: WatchRuntime, ticket: Ticket) -> None:
        """Poll ``rt`` once, apply the result, publish its events, schedule the next poll."""
        if rt.removed:
            return
        rt.polls += 1
        rt.last_poll_at = started = self.clock.now()
        try:
            if rt.kind is Kind.DISCOVERY:
                await self._poll_discovery(rt, ticket)
            else:
                await self._apply(rt, await self._fetch_and_step(rt, ticket))
        except Exception:
            # A bug must not stop the watch: log it and look again later.
            log.exception("internal error while polling", watch=rt.key)
            self._schedule(rt, rt.policy.max_interval)
        if self.on_poll is not None:
            self.on_poll(rt, self.clock.now() - started)

    def _fetched(self, rt: WatchRuntime) -> None:
        rt.last_ok_at = self.clock.now()
        self.last_ok_wall[rt.source] = self.clock.wall().timestamp()

    async def _fetch_and_step(self, rt: WatchRuntime, ticket: Ticket) -> Step:
        stream_problem: Problem | None = None
        try:
            if rt.kind is Kind.GROUP:
                parallel = self._client(rt.source, ParallelClient)
                snapshot = await parallel.get_group(rt.subject_id, ticket)
                observation = GroupObservation(snapshot)
                state = rt.state
                assert isinstance(state, WatchState)
                if self._stream_may_catch_up(rt, state, snapshot):
                    return Step(state, (), STREAM_RECHECK)
                if needs_failed_runs(state, snapshot):
                    try:
                        read = await parallel.failed_runs(
                            rt.subject_id,
                            state.cursor,
                            ticket,
                            # Runs the events stream named are still ahead of the cursor.
                            expect=snapshot.count(ParallelStatus.FAILED)
                            - state.known_failed
                            + rt.streamed_ahead,
                        )
                    except SourceError as exc:
                        stream_problem = exc.problem
                        log.warning(
                            "group status read, but its failed-runs stream failed",
                            watch=rt.key,
                            problem=exc.problem.kind.value,
                            error=exc.problem.message,
                        )
                    else:
                        fresh = self._not_named_yet(rt, read.runs)
                        if read.complete:
                            rt.streamed_ahead = 0
                        observation = GroupObservation(snapshot, fresh, read.cursor, streamed=True)
                outcome: RunSnapshot | GroupObservation = observation
            else:
                outcome = await self.clients[rt.source].get_run(rt.subject_id, ticket)
        except SourceError as exc:
            rt.errors += 1
            state = rt.state
            assert isinstance(state, WatchState)
            step = step_failure(state, exc.problem, self._context(rt))
            log.warning(
                "poll failed",
                watch=rt.key,
                problem=exc.problem.kind.value,
                error=exc.problem.message,
                retry_in=round(step.delay or 0, 2),
            )
            return step
        # Read the state only now: whatever changed it while we waited is accounted for.
        state = rt.state
        assert isinstance(state, WatchState)
        self._fetched(rt)
        if isinstance(outcome, GroupObservation):
            return step_group(state, outcome, self._context(rt), stream_problem)
        if not classify(outcome.source, outcome.status).known:
            log.warning(
                "unknown status value kept as is",
                watch=rt.key,
                subject=rt.subject_id,
                status=outcome.status,
            )
        return step_run(state, outcome, self._context(rt))

    def _write(self, rt: WatchRuntime) -> list[WatchWrite]:
        """The state write a poll needs: none when its durable part did not change."""
        if not self.persist:
            return []
        durable = durable_part(rt.state)
        if durable == rt.saved:
            return []
        rt.saved = durable
        return [WatchWrite(rt.key, rt.subject_id, durable, rt.parent, rt.finished_at)]

    async def _apply(self, rt: WatchRuntime, step: Step) -> None:
        rt.state = step.state
        events: Sequence[Event] = step.events
        if rt.restored and step.state.health.healthy:
            events = mark_late(events, self.started_at)
            rt.restored = False
        if step.state.done and rt.finished_at is None:
            rt.finished_at = self.clock.wall().timestamp()
            log.info(
                "run reached a terminal status; polling stops", watch=rt.key, subject=rt.subject_id
            )
        await self._publish(events, self._write(rt))
        self._seen(rt)
        if not step.state.done:
            self._schedule(rt, step.delay)
        if self.streams is not None and rt.kind is Kind.GROUP:
            self.streams.want(rt)

    def _schedule(self, rt: WatchRuntime, delay: float | None) -> None:
        if delay is not None and not rt.removed:
            if rt.streaming and not rt.stream_suspect:
                # The stream reports changes; polls only cross-check the counts.
                delay = max(delay, rt.policy.max_interval)
            self.schedulers[rt.source].schedule(rt, delay)

    # -- group event streams ----------------------------------------------------------------

    def _stream_may_catch_up(
        self, rt: WatchRuntime, state: WatchState, snapshot: GroupSnapshot
    ) -> bool:
        """A cross-check poll of a streamed group that disagrees with the stream waits once.

        The stream may simply not have delivered yet: look again in
        ``STREAM_RECHECK``; if the two still disagree then, the stream lost
        something, and the poll is applied as in poll mode.
        """
        known = state.snapshot
        if not rt.streaming or rt.stream_suspect or not isinstance(known, GroupSnapshot):
            rt.stream_suspect = False
            return False
        differs = (
            known.counts != snapshot.counts
            or known.is_active != snapshot.is_active
            or known.num_task_runs != snapshot.num_task_runs
        )
        rt.stream_suspect = differs
        return differs

    def poll_soon(self, rt: WatchRuntime) -> None:
        """Poll ``rt`` now (a stream ended: polling takes over)."""
        if not rt.removed:
            self.schedulers[rt.source].schedule(rt, 0.0)

    def stretch_polls(self, rt: WatchRuntime) -> None:
        """A stream delivers for ``rt``: its next poll is a cross-check, ``max_interval`` away."""
        self._schedule(rt, rt.policy.max_interval)

    async def apply_streamed(self, rt: WatchRuntime, observation: GroupObservation) -> None:
        """Apply what a group's event stream reported, as a poll's result would be."""
        if rt.removed:
            return
        state = rt.state
        assert isinstance(state, WatchState)
        self._fetched(rt)
        fresh = self._not_named_yet(rt, observation.failed_runs)
        rt.streamed_ahead += len(fresh)
        observation = replace(observation, failed_runs=fresh)
        await self._apply(rt, step_group(state, observation, self._context(rt)))

    def _not_named_yet(self, rt: WatchRuntime, runs: Sequence[FailedRun]) -> tuple[FailedRun, ...]:
        """``runs`` that neither path named before, now counted as named.

        Only groups a stream may also report keep the record; the others return ``runs``.
        """
        if self.streams is None or not may_stream(self.configs.get(rt.key)):
            return tuple(runs)
        if rt.named is None:
            rt.named = set()
        named = rt.named
        fresh = tuple(r for r in runs if r.run_id not in named)
        named.update(r.run_id for r in fresh)
        return fresh

    def _covering(self, event: Event) -> list[WatchRef]:
        """Every watch that covers the run an event is about (its own included)."""
        run = event.subject_id
        keys = [f"trigger_run:{run}", f"parallel_task_run:{run}"]
        if group := event.details.get("group_id"):
            keys.append(f"parallel_task_group:{group}")
        refs = [rt.ref for key in keys if (rt := self.registry.get(key)) is not None]
        if event.source is not Source.TRIGGER:
            return refs
        if self._discovery_keys is None:
            self._discovery_keys = tuple(k for k in self.configs if k.startswith("trigger_runs:"))
        d = event.details
        for parent in self._discovery_keys:
            # A filter covers the run once it follows it, or as soon as the run matches
            # it (its next listing would find it): whichever watch speaks first.
            watch, owner = self.configs.get(parent), self.registry.get(parent)
            if not isinstance(watch, TriggerRunsWatch) or owner is None:
                continue
            if f"{parent}/{run}" in self.registry or watch.filter.matches(
                event.to_status, d.get("task"), d.get("tags") or (), d.get("version")
            ):
                refs.append(owner.ref)
        return refs

    def _one_per_change(self, events: Sequence[Event]) -> list[Event]:
        """Drop the copies of changes another watch announced; the rest carry every
        watch that covers their run (see :mod:`watcher.core.coverage`)."""
        fresh, copies = self.announced.first(events)
        for copy, by in copies:
            log.debug(
                "change already announced by another watch",
                event_id=copy.event_id,
                watch=copy.watch.key,
                announced_by=by,
            )
        return [merge_watches(e, self._covering(e)) if e.kind in SHARED_KINDS else e for e in fresh]

    async def _publish(self, events: Sequence[Event], writes: Sequence[WatchWrite]) -> None:
        events = self._one_per_change(events)
        for event in events:
            log.info(
                "event",
                event_id=event.event_id,
                kind=event.kind.value,
                severity=event.severity.value,
                watch=event.watch.key,
                subject=event.subject_id,
                transition=f"{event.from_status} -> {event.to_status}",
            )
        if events or writes:
            await self.publish(events, writes)
        self.events_published += len(events)

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

    # -- discovery (trigger_runs) ----------------------------------------------------------

    async def _poll_discovery(self, rt: WatchRuntime, ticket: Ticket) -> None:
        watch = self.configs.get(rt.key)
        assert isinstance(watch, TriggerRunsWatch)
        trigger = self._client(rt.source, TriggerClient)
        flt = watch.filter.list_filter()
        ctx = self._context(rt)
        try:
            listing = await trigger.list_all(
                flt, ticket, page_size=watch.page_size, max_pages=watch.max_pages
            )
        except SourceError as exc:
            rt.errors += 1
            state = rt.state
            assert isinstance(state, DiscoveryState)
            log.warning(
                "discovery pass failed",
                watch=rt.key,
                problem=exc.problem.kind.value,
                error=exc.problem.message,
            )
            await self._after_discovery(rt, step_discovery_failure(state, exc.problem, ctx), [])
            return
        self._fetched(rt)
        if not listing.complete:
            log.warning(
                "discovery pass stopped at the page cap; older runs of the window are not checked",
                watch=rt.key,
                pages=listing.pages,
                runs=len(listing.runs),
                hint="narrow the filter or its period, or raise max_pages",
            )
        watched = {key.rsplit("/", 1)[-1] for key in rt.children or ()}
        state = rt.state
        assert isinstance(state, DiscoveryState)
        step = step_discovery(state, Listing(listing.runs, listing.complete), ctx, watched)
        plan = plan_adoption(
            step, shard=self.shard, following=len(rt.children or ()), max_runs=watch.max_runs
        )
        for run in plan.over_cap:
            log.warning(
                "trigger_runs watch is at max_runs; run not followed",
                watch=rt.key,
                run_id=run.run_id,
                max_runs=watch.max_runs,
                announced=run in plan.announce_only,
            )
        writes: list[WatchWrite] = []
        for run, announce in plan.follow:
            writes += self._write(self._adopt(rt, watch, run, announce=announce))
        # Over the cap: announced from the listing rather than lost.
        events = [
            event
            for run in plan.announce_only
            for event in diff_run(
                rt.ref,
                None,
                run,
                observed_at=ctx.observed_at,
                announce=True,
                url_template=ctx.url_template,
            )
        ]
        await self._after_discovery(rt, step, events, writes)

    async def _after_discovery(
        self,
        rt: WatchRuntime,
        step: DiscoveryStep,
        events: list[Event],
        writes: list[WatchWrite] | None = None,
    ) -> None:
        rt.state = step.state
        # Every shard lists; the shard that owns the watch speaks for its health.
        own = list(step.events) if self.shard.owns(rt.key) else []
        await self._publish([*own, *events], [*self._write(rt), *(writes or [])])
        self._seen(rt)
        self._schedule(rt, step.delay)

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
        return child
