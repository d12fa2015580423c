"""The running process: one task group owns the pollers, the dispatcher, signals and sweeps.

Start: open the state file (if any), restore watch states, the outbox and open
conditions, then poll. Publishing (:meth:`Daemon._publish`): plan deliveries,
commit the watch states and outbox rows in one transaction, then hand the
events to the notifier channels. SIGHUP re-reads the config; a bad one is
refused and the running one stays. Shutdown (SIGTERM, SIGINT, or
:meth:`Daemon.request_stop`): polling stops, pending notifications go out within
``delivery.drain_timeout``, what is left is reported by ``event_id`` (and stays in
the outbox for the next start).
"""

from __future__ import annotations

import random
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from watcher import __version__
from watcher.clock import Clock, SystemClock
from watcher.config.loader import ConfigError, load_config
from watcher.config.model import WatcherConfig
from watcher.config.notifications import build_routes
from watcher.config.settings import Settings
from watcher.core.events import Event, EventKind
from watcher.core.statuses import Severity
from watcher.core.watch import DiscoveryState, describe
from watcher.daemon.build import build_channels, build_gates, build_upstreams, check_credentials
from watcher.daemon.durability import Durability
from watcher.daemon.logging import SCRUBBER
from watcher.daemon.state import OutboxRow, StateStore, Stored, WatchWrite
from watcher.daemon.watcher import Watcher
from watcher.notify.channel import NotifierChannel
from watcher.notify.dispatcher import DEFAULT_ROUTE, Dispatcher, Plan, watcher_event
from watcher.notify.serialize import condition_from_dict, event_from_dict, event_to_dict
from watcher.sources.gate import Ticket

__all__ = ["Daemon", "WatchStatus", "build_channels", "check_credentials"]

log = structlog.get_logger("watcher.daemon")


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """One line of ``run-watcher once``."""

    key: str
    name: str
    state: str
    problem: str | None
    detail: str


class Daemon:
    """run-watcher's process: build the parts from config, run them, reload, stop cleanly."""

    def __init__(
        self,
        config: WatcherConfig,
        settings: Settings,
        *,
        channels: Sequence[NotifierChannel] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        config_path: Path | None = None,
    ) -> None:
        check_credentials(config, settings)
        SCRUBBER.add(settings.secret_values())
        self.config = config
        self.settings = settings
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self._transport = transport
        self.channels = (
            list(channels) if channels is not None else build_channels(config, self.clock)
        )
        self.dispatcher = Dispatcher(
            build_routes(config.routes, config.notifications),
            self.channels,
            self.clock,
            silences=[s.silence(i) for i, s in enumerate(config.silences)],
            sink=self._persist_and_apply,
        )
        self._wire(self.channels)
        store = StateStore(config.state_file) if config.state_file is not None else None
        self.durability = Durability(store, self.clock)
        self._stop = anyio.Event()
        self.ready = anyio.Event()
        self.watcher: Watcher | None = None
        self.reloads = 0

    def _wire(self, channels: Sequence[NotifierChannel]) -> None:
        for channel in channels:
            channel.on_delivered = self._delivered

    # -- publishing ------------------------------------------------------------------------

    async def _publish(self, events: Sequence[Event], writes: Sequence[WatchWrite]) -> None:
        """Persist the watch states and the events' outbox rows, then deliver."""
        await self._persist_and_apply(self.dispatcher.plan(events), writes)

    async def _persist_and_apply(self, plan: Plan, writes: Sequence[WatchWrite] = ()) -> None:
        rows = [
            OutboxRow(d.event.event_id, d.channel.id, d.route.id, event_to_dict(d.event))
            for d in plan.deliveries
        ]
        healthy = self.durability.healthy
        await self.durability.commit(writes, rows, list(plan.conditions.items()))
        self.dispatcher.apply(plan)
        if self.durability.healthy != healthy:
            await self._announce_durability()

    async def _delivered(self, channel: NotifierChannel, events: Sequence[Event]) -> None:
        healthy = self.durability.healthy
        await self.durability.delivered(channel.id, [e.event_id for e in events])
        if self.durability.healthy != healthy:
            await self._announce_durability()

    async def _announce_durability(self) -> None:
        path = str(self.config.state_file)
        now = self.clock.wall()
        if self.durability.healthy:
            event = watcher_event(
                EventKind.STATE_RECOVERED,
                Severity.INFO,
                path,
                now,
                {"from": "unavailable", "to": "ok"},
                now.isoformat(),
            )
        else:
            event = watcher_event(
                EventKind.STATE_UNAVAILABLE,
                Severity.WARNING,
                path,
                now,
                {
                    "from": "ok",
                    "to": "unavailable",
                    "error": self.durability.error or "",
                    "message": "notifications are no longer kept across a restart",
                },
                now.isoformat(),
            )
        await self.dispatcher.broadcast(event)

    # -- start -------------------------------------------------------------------------------

    async def _build(self, stack: AsyncExitStack, *, publish: bool = True) -> Watcher:
        gates = build_gates(self.config.sources, self.clock)
        upstreams = await build_upstreams(stack, self.config, self.settings, gates, self._transport)
        watcher = Watcher(
            polling=self.config.polling,
            sources=self.config.sources,
            clock=self.clock,
            rng=self.rng,
            gates=gates,
            parallel=upstreams.parallel,
            trigger=upstreams.trigger,
            workers={source: int(gate.limiter.total_tokens) for source, gate in gates.items()},
            retention=self.config.retention,
            **({"publish": self._publish} if publish else {}),
        )
        self.watcher = watcher
        return watcher

    async def _restore(self, watcher: Watcher, stored: Stored) -> None:
        deletions = watcher.restore(stored)
        conditions = []
        for key, data in stored.conditions.items():
            try:
                conditions.append(condition_from_dict(data))
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("stored condition not usable; dropped", condition=key, error=str(exc))
        self.dispatcher.restore_conditions(conditions)
        owed: dict[str, int] = {}
        gone: set[str] = set()
        for row in stored.outbox:
            channel = self.dispatcher.channel_by_id(row.notifier)
            if channel is None:
                gone.add(row.notifier)
                continue
            try:
                event = event_from_dict(row.event)
            except (KeyError, ValueError, TypeError) as exc:
                log.error(
                    "stored notification not readable; dropped",
                    event_id=row.event_id,
                    error=str(exc),
                )
                continue
            channel.accept(event, self.dispatcher.route_by_id(row.route) or DEFAULT_ROUTE)
            owed[channel.name] = owed.get(channel.name, 0) + 1
        if owed:
            log.info("undelivered notifications restored from the outbox", notifiers=owed)
        for notifier in gone:
            dropped = await self.durability.forget_notifier(notifier)
            log.warning(
                "outbox entries for a notifier no longer configured dropped",
                notifier=notifier,
                events=dropped,
            )
        if deletions:
            await self.durability.commit(deletions, [])

    # -- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a clean shutdown."""
        self._stop.set()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload_from_file()
                    continue
                log.info("signal received; shutting down", signal=signal.Signals(signum).name)
                self.request_stop()
                return

    async def _sweeper(self, watcher: Watcher) -> None:
        every = max(1.0, min(60.0, self.config.retention / 4))
        while True:
            await anyio.sleep(every)
            writes = watcher.sweep(self.clock.wall().timestamp())
            if writes:
                await self.durability.commit(writes, [])

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch until asked to stop; then drain notifications and return."""
        async with AsyncExitStack() as stack:
            stored = await self.durability.open()
            stack.push_async_callback(self.durability.close)
            watcher = await self._build(stack)
            for watch in self.config.watches:
                watcher.add(watch)
            await self._restore(watcher, stored)
            if not self.config.watches:
                watcher.first_pass.set()
            async with anyio.create_task_group() as root:
                if handle_signals:
                    root.start_soon(self._signals)
                dispatch_scope = anyio.CancelScope()
                dispatch_done = anyio.Event()

                async def dispatch() -> None:
                    with dispatch_scope:
                        await self.dispatcher.run()
                    dispatch_done.set()

                root.start_soon(dispatch)
                root.start_soon(self._sweeper, watcher)
                log.info(
                    "run-watcher started",
                    version=__version__,
                    watches=len(self.config.watches),
                    notifiers=[channel.name for channel in self.channels],
                    state_file=str(self.config.state_file) if self.config.state_file else None,
                )
                if self.durability.enabled and not self.durability.healthy:
                    await self._announce_durability()
                async with anyio.create_task_group() as polling:
                    for scheduler in watcher.schedulers.values():
                        await polling.start(scheduler.run)
                    polling.start_soon(self._announce_ready, watcher)
                    task_status.started()
                    await self._stop.wait()
                    polling.cancel_scope.cancel()
                self.dispatcher.close()
                dispatch_scope.deadline = anyio.current_time() + self.config.delivery.drain_timeout
                await dispatch_done.wait()
                self._report_leftovers(dispatch_scope.cancelled_caught)
                root.cancel_scope.cancel()
        log.info("run-watcher stopped", events=watcher.events_published)

    async def _announce_ready(self, watcher: Watcher) -> None:
        await watcher.first_pass.wait()
        self.ready.set()
        log.info("every watch polled once", watches=len(watcher.registry))

    def _report_leftovers(self, timed_out: bool) -> None:
        leftovers = self.dispatcher.undelivered
        if leftovers:
            log.error(
                "shutdown deadline reached with notifications undelivered",
                drain_timeout=self.config.delivery.drain_timeout,
                undelivered=leftovers,
                kept_in_state_file=self.durability.enabled and self.durability.healthy,
            )
        elif timed_out:
            log.warning("shutdown deadline reached while delivering")
        else:
            log.info("notification queues drained")

    # -- reload ----------------------------------------------------------------------------

    async def reload_from_file(self) -> bool:
        """Re-read the config file (SIGHUP). A bad file is refused; the running config stays."""
        if self.config_path is None:
            log.warning("reload requested, but the daemon was not started from a config file")
            return False
        try:
            config = self.settings.apply_to(load_config(self.config_path))
            check_credentials(config, self.settings)
            channels = build_channels(
                config, self.clock, str(self.config_path), reuse=self.channels
            )
        except ConfigError as exc:
            log.error("reload refused; the running configuration stays", problems=exc.problems)
            return False
        await self.apply_config(config, channels)
        return True

    async def apply_config(
        self, config: WatcherConfig, channels: Sequence[NotifierChannel]
    ) -> None:
        """Switch to a new (validated) configuration without losing state or schedules."""
        old = self.config
        if config.sources != old.sources or config.sources_used() - old.sources_used():
            log.warning(
                "the sources section or the set of upstreams changed: restart to apply that part"
            )
        if config.state_file != old.state_file:
            log.warning("state_file changed: restart to apply it")
        self._wire(channels)
        self.dispatcher.configure(
            build_routes(config.routes, config.notifications),
            [s.silence(i) for i, s in enumerate(config.silences)],
            channels,
        )
        self.channels = list(channels)
        writes: list[WatchWrite] = []
        if self.watcher is not None:
            writes = self.watcher.reconfigure(config.watches, config.polling)
            self.watcher.retention = config.retention
            for write in writes:
                self.dispatcher.conditions.forget_watch(write.key)
        if writes:
            await self.durability.commit(writes, [])
        self.config = config.model_copy(
            update={"sources": old.sources, "state_file": old.state_file}
        )
        self.reloads += 1
        log.info(
            "configuration reloaded",
            watches=len(config.watches),
            notifiers=[c.name for c in channels],
            routes=len(config.routes or []),
            silences=len(config.silences),
        )

    # -- once ----------------------------------------------------------------------------

    async def once(self) -> list[WatchStatus]:
        """Poll every configured watch once, without notifying; report where each stands."""
        async with AsyncExitStack() as stack:
            watcher = await self._build(stack, publish=False)
            runtimes = [watcher.add(watch) for watch in self.config.watches]
            async with anyio.create_task_group() as tg:
                for rt in runtimes:
                    tg.start_soon(watcher.poll, rt, Ticket(watcher.schedulers[rt.source].gate))
        rows = []
        for rt in runtimes:
            state = rt.state
            if isinstance(state, DiscoveryState):
                detail = f"{len(state.seen)} matching runs"
            else:
                detail = describe(state)
            last = state.health.last_problem
            rows.append(
                WatchStatus(
                    rt.key,
                    rt.ref.display_name,
                    "ok" if state.health.healthy else "error",
                    last.message if last else None,
                    detail,
                )
            )
        return rows
