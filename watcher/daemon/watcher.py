"""Polling: fetch -> pure step -> publish (persist, then deliver) -> schedule next.

The registry the pollers serve (adding, removing, restoring and retiring watches)
is :mod:`watcher.daemon.registry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import structlog

from watcher.config.model import TriggerRunsWatch
from watcher.core.absence import AbsenceState, Expectation, check_absence
from watcher.core.codec import (
    durable_part,
)
from watcher.core.coverage import SHARED_KINDS, merge_watches
from watcher.core.diff import diff_run
from watcher.core.discovery import plan_adoption
from watcher.core.events import Event, WatchRef
from watcher.core.health import Problem
from watcher.core.pushed import numbered
from watcher.core.snapshots import FailedRun, GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import ParallelStatus, classify
from watcher.core.watch import (
    DiscoveryState,
    DiscoveryStep,
    Listing,
    Step,
    StepContext,
    WatchState,
    mark_late,
    needs_failed_runs,
    step_discovery,
    step_discovery_failure,
    step_failure,
    step_group,
    step_run,
    tick_run,
)
from watcher.daemon.feed_host import BACKSTOP, FeedHost
from watcher.daemon.registry import Publish
from watcher.daemon.runtime import Kind, WatchRuntime
from watcher.daemon.state import WatchWrite
from watcher.daemon.streams import may_stream
from watcher.sources.errors import SourceError
from watcher.sources.gate import Ticket
from watcher.sources.parallel import ParallelClient
from watcher.sources.trigger import TriggerClient
from watcher.upstreams.plugin import Links
from watcher.upstreams.registry import PLUGINS, plugin_for

__all__ = ["Publish", "Watcher"]

log = structlog.get_logger("watcher.poll")

STREAM_RECHECK = 1.0
"""Seconds before a cross-check poll that disagreed with a group's stream looks again."""


class Watcher(FeedHost):
    """The registry of watches and the pollers that serve them."""

    # -- polling --------------------------------------------------------------------------

    def _context(self, rt: WatchRuntime) -> StepContext:
        kind = (rt.source, rt.ref.type)
        links = self.links.get(kind)
        if links is None:
            links = self.links[kind] = (
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
            deadlines=deadlines.limits()
            if (deadlines := getattr(config, "deadlines", None))
            else None,
        )

    async def poll(self, rt: WatchRuntime, ticket: Ticket) -> None:
        """Poll ``rt`` once, apply the result, publish its events, schedule the next poll."""
        if rt.removed:
            return
        if rt.kind is not Kind.DISCOVERY and not self.acts_on(rt):
            # Another replica's now: dormant until the cluster hands it back (wake).
            self.dormant.add(rt.key)
            self._mark_polled(rt.key)
            return
        if rt.tick_due and rt.pushed and isinstance(rt.state, WatchState):
            rt.tick_due = False
            await self._apply(rt, tick_run(rt.state, self._context(rt)))
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
        if rt.attempts_ahead and isinstance(state.snapshot, RunSnapshot):
            # The feed saw attempts begin that the baseline could not number: the poll can.
            state = replace(state, snapshot=numbered(state.snapshot, outcome, rt.attempts_ahead))
            rt.attempts_ahead = 0
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
        if not self.acts_on(rt):
            # The lease moved while the fetch was out (or the feed showed another
            # replica's run): its holder reports it.
            self.dormant.add(rt.key)
            self._mark_polled(rt.key)
            return
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
            self._schedule(rt, step.delay, step.check_in)
        if self.streams is not None and rt.kind is Kind.GROUP:
            self.streams.want(rt)

    def _schedule(
        self, rt: WatchRuntime, delay: float | None, check_in: float | None = None
    ) -> None:
        if delay is not None and not rt.removed:
            rt.tick_due = False
            if rt.streaming and not rt.stream_suspect:
                # The stream reports changes; polls only cross-check the counts.
                delay = max(delay, rt.policy.max_interval)
            elif rt.pushed:
                # The realtime feed reports changes and cross-checks in batches; a run's
                # own poll is the backstop, if no batch confirms it meanwhile. What only
                # the clock tells (stuck, a deadline) is looked at when due, unpolled.
                delay = max(delay, BACKSTOP * self.sources.trigger.realtime_cross_check)
                if check_in is not None and check_in < delay:
                    delay, rt.tick_due = check_in, True
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
        plugin = PLUGINS.get(event.source)
        if plugin is None:
            return []
        run = event.subject_id
        keys = plugin.covering_keys(event)
        refs = [rt.ref for key in keys if (rt := self.registry.get(key)) is not None]
        if plugin.listing is None:
            return refs
        if self._discovery_keys is None:
            prefix = f"{plugin.listing.value}:"
            self._discovery_keys = tuple(k for k in self.configs if k.startswith(prefix))
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
                transition=(
                    f"{event.from_status} -> {event.to_status}"
                    if event.from_status is not None
                    else f"{event.to_status} (first seen)"
                ),
            )
        if events or writes:
            await self.publish(events, writes)
        self.events_published += len(events)

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
        if watch.expect is not None:
            step = self._expect(rt, step, watch.expect.expectation(), listing.runs, ctx)
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

    def _expect(
        self,
        rt: WatchRuntime,
        step: DiscoveryStep,
        expectation: Expectation,
        runs: Sequence[RunSnapshot],
        ctx: StepContext,
    ) -> DiscoveryStep:
        """Check the watch's ``expect:`` against this listing (``core/absence.py``); the
        next pass comes by the time the current window closes."""
        absence = step.state.absence or AbsenceState(since=ctx.observed_at)
        absence, missing, check_in = check_absence(
            expectation, absence, runs, ctx.observed_at, watch=rt.ref, url_template=None
        )
        if rt.restored:  # a window that closed while the daemon was down
            missing = mark_late(missing, self.started_at)
            rt.restored = False
        delay = check_in if step.delay is None else min(step.delay, check_in)
        return replace(
            step,
            state=replace(step.state, absence=absence),
            events=(*step.events, *missing),
            delay=delay,
        )

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
