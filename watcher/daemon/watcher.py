"""Polling: fetch -> pure step -> events out -> schedule next. One method per watch kind."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import anyio
import structlog

from watcher.clock import Clock
from watcher.config.model import (
    PollingConfig,
    SourcesConfig,
    TriggerRunsWatch,
    WatchConfig,
)
from watcher.core.diff import diff_run
from watcher.core.events import Event, WatchType
from watcher.core.health import Problem
from watcher.core.schedule import SchedulePolicy, initial_state
from watcher.core.snapshots import GroupObservation, RunSnapshot
from watcher.core.statuses import ParallelStatus, Source, classify
from watcher.core.watch import (
    DiscoveryState,
    Listing,
    Step,
    StepContext,
    WatchState,
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
from watcher.sources.errors import SourceError
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.parallel import ParallelClient
from watcher.sources.trigger import ListFilter, TriggerClient

__all__ = ["Watcher"]

log = structlog.get_logger("watcher.poll")

Emit = Callable[[Event], Awaitable[None]]


class Watcher:
    """The registry of watches and the pollers that serve them."""

    def __init__(
        self,
        *,
        polling: PollingConfig,
        sources: SourcesConfig,
        clock: Clock,
        rng: random.Random,
        emit: Emit,
        gates: dict[Source, SourceGate],
        parallel: ParallelClient | None,
        trigger: TriggerClient | None,
        workers: dict[Source, int],
    ) -> None:
        self.polling = polling
        self.sources = sources
        self.clock = clock
        self.rng = rng
        self.emit = emit
        self.parallel = parallel
        self.trigger = trigger
        self.registry: dict[str, WatchRuntime] = {}
        self.configs: dict[str, WatchConfig] = {}
        self.schedulers = {
            source: SourceScheduler(
                source.value, gate, self.poll, workers=workers[source], clock=clock
            )
            for source, gate in gates.items()
        }
        self.first_pass = anyio.Event()
        self._unpolled: set[str] = set()
        self.events_emitted = 0

    # -- registry -----------------------------------------------------------------

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

    def add(self, watch: WatchConfig) -> WatchRuntime:
        """Register a configured watch and schedule its first poll now."""
        ref = watch.ref()
        policy = self._policy(watch)
        kind = {
            WatchType.PARALLEL_TASK_GROUP: Kind.GROUP,
            WatchType.PARALLEL_TASK_RUN: Kind.RUN,
            WatchType.TRIGGER_RUN: Kind.RUN,
            WatchType.TRIGGER_RUNS: Kind.DISCOVERY,
        }[ref.type]
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
        self._unpolled.add(rt.key)
        self.schedulers[rt.source].schedule(rt, 0.0)
        return rt

    def remove(self, key: str) -> None:
        """Stop polling a watch and forget it (and its discovered runs)."""
        rt = self.registry.pop(key, None)
        if rt is None:
            return
        rt.removed = True
        self.configs.pop(key, None)
        for child in list(rt.children):
            self.remove(child)
        if rt.parent and (parent := self.registry.get(rt.parent)):
            parent.children.discard(key)
        self._mark_polled(key)

    def _mark_polled(self, key: str) -> None:
        self._unpolled.discard(key)
        if not self._unpolled:
            self.first_pass.set()

    # -- polling --------------------------------------------------------------------

    def _context(self, rt: WatchRuntime) -> StepContext:
        if rt.source is Source.PARALLEL:
            cfg_p = self.sources.parallel
            url = cfg_p.group_url if rt.kind is Kind.GROUP else cfg_p.run_url
            run_url = cfg_p.run_url
        else:
            url = run_url = self.sources.trigger.run_url
        config = self.configs.get(rt.parent or rt.key)
        return StepContext(
            watch=rt.ref,
            observed_at=self.clock.wall(),
            policy=rt.policy,
            rng=self.rng,
            error_threshold=self.polling.error_threshold,
            url_template=url,
            run_url_template=run_url,
            stuck_after=getattr(config, "stuck_after", None),
        )

    async def poll(self, rt: WatchRuntime, ticket: Ticket) -> None:
        """Poll ``rt`` once, apply the result, emit its events, schedule the next poll."""
        if rt.removed:
            return
        rt.polls += 1
        rt.last_poll_at = self.clock.now()
        try:
            if rt.kind is Kind.DISCOVERY:
                await self._poll_discovery(rt, ticket)
                return
            step = await self._fetch_and_step(rt, ticket)
        except Exception:
            # A bug must not stop the watch: log it and look again later.
            log.exception("internal error while polling", watch=rt.key)
            self._finish(rt, rt.policy.max_interval)
            return
        await self._apply(rt, step)

    async def _fetch_and_step(self, rt: WatchRuntime, ticket: Ticket) -> Step:
        stream_problem: Problem | None = None
        try:
            if rt.kind is Kind.GROUP:
                assert self.parallel is not None
                snapshot = await self.parallel.get_group(rt.subject_id, ticket)
                observation = GroupObservation(snapshot)
                state = rt.state
                assert isinstance(state, WatchState)
                if needs_failed_runs(state, snapshot):
                    try:
                        read = await self.parallel.failed_runs(
                            rt.subject_id,
                            state.cursor,
                            ticket,
                            expect=snapshot.count(ParallelStatus.FAILED) - state.known_failed,
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
                        observation = GroupObservation(
                            snapshot, read.runs, read.cursor, streamed=True
                        )
                outcome: RunSnapshot | GroupObservation = observation
            elif rt.source is Source.PARALLEL:
                assert self.parallel is not None
                outcome = await self.parallel.get_run(rt.subject_id, ticket)
            else:
                assert self.trigger is not None
                outcome = await self.trigger.get_run(rt.subject_id, ticket)
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
        rt.last_ok_at = self.clock.now()
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

    async def _apply(self, rt: WatchRuntime, step: Step) -> None:
        rt.state = step.state
        for event in step.events:
            await self._emit(event)
        self._mark_polled(rt.key)
        if step.state.done:
            log.info(
                "run reached a terminal status; polling stops", watch=rt.key, subject=rt.subject_id
            )
            if rt.parent is not None:
                self.remove(rt.key)
            return
        self._finish(rt, step.delay)

    def _finish(self, rt: WatchRuntime, delay: float | None) -> None:
        if delay is not None and not rt.removed:
            self.schedulers[rt.source].schedule(rt, delay)

    async def _emit(self, event: Event) -> None:
        self.events_emitted += 1
        log.info(
            "event",
            event_id=event.event_id,
            kind=event.kind.value,
            severity=event.severity.value,
            watch=event.watch.key,
            subject=event.subject_id,
            transition=f"{event.from_status} -> {event.to_status}",
        )
        await self.emit(event)

    # -- discovery (trigger_runs) ----------------------------------------------------

    async def _poll_discovery(self, rt: WatchRuntime, ticket: Ticket) -> None:
        watch = self.configs.get(rt.key)
        assert isinstance(watch, TriggerRunsWatch)
        assert self.trigger is not None
        flt = ListFilter(
            status=watch.filter.status,
            task=watch.filter.task,
            tag=watch.filter.tag,
            version=watch.filter.version,
            queue=watch.filter.queue,
            period=watch.filter.period,
            is_test=watch.filter.is_test,
        )
        ctx = self._context(rt)
        try:
            listing = await self.trigger.list_all(
                flt, ticket, page_size=watch.page_size, max_pages=watch.max_pages
            )
        except SourceError as exc:
            rt.errors += 1
            state = rt.state
            assert isinstance(state, DiscoveryState)
            step = step_discovery_failure(state, exc.problem, ctx)
            log.warning(
                "discovery pass failed",
                watch=rt.key,
                problem=exc.problem.kind.value,
                error=exc.problem.message,
            )
            rt.state = step.state
            for event in step.events:
                await self._emit(event)
            self._mark_polled(rt.key)
            self._finish(rt, step.delay)
            return
        rt.last_ok_at = self.clock.now()
        if not listing.complete:
            log.warning(
                "discovery pass stopped at the page cap; older runs of the window are not checked",
                watch=rt.key,
                pages=listing.pages,
                runs=len(listing.runs),
                hint="narrow the filter or its period, or raise max_pages",
            )
        watched = {key.rsplit("/", 1)[-1] for key in rt.children}
        state = rt.state
        assert isinstance(state, DiscoveryState)
        dstep = step_discovery(state, Listing(listing.runs, listing.complete), ctx, watched)
        rt.state = dstep.state
        for event in dstep.events:
            await self._emit(event)
        for run in dstep.baseline_runs:
            if not classify(run.source, run.status).terminal:
                self._adopt(rt, watch, run, announce=False)
        for run in dstep.new_runs:
            if not self._adopt(rt, watch, run, announce=True):
                # Over the cap: announce from the listing rather than lose it.
                for event in diff_run(
                    rt.ref,
                    None,
                    run,
                    observed_at=ctx.observed_at,
                    announce=True,
                    url_template=ctx.url_template,
                ):
                    await self._emit(event)
        self._mark_polled(rt.key)
        self._finish(rt, dstep.delay)

    def _adopt(
        self, parent: WatchRuntime, watch: TriggerRunsWatch, run: RunSnapshot, *, announce: bool
    ) -> bool:
        """Watch a discovered run as a watch of its own. False when over ``max_runs``."""
        if len(parent.children) >= watch.max_runs:
            log.warning(
                "trigger_runs watch is at max_runs; run announced but not followed",
                watch=parent.key,
                run_id=run.run_id,
                max_runs=watch.max_runs,
            )
            return False
        key = f"{parent.key}/{run.run_id}"
        policy = self._run_policy(watch)
        state = new_watch_state(policy, announce=announce, snapshot=None if announce else run)
        child = WatchRuntime(
            key=key,
            ref=parent.ref,
            kind=Kind.RUN,
            subject_id=run.run_id,
            policy=policy,
            state=state,
            parent=parent.key,
        )
        self.registry[key] = child
        parent.children.add(key)
        delay = 0.0 if announce else self.rng.uniform(0, policy.min_interval)
        self.schedulers[Source.TRIGGER].schedule(child, delay)
        return True
