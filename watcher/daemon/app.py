"""The running process: one task group owns the pollers, the dispatcher, signals and sweeps.

Start: open the state file (if any), restore watch states, the outbox and open
conditions, then poll. Publishing (:meth:`Daemon._publish`): plan deliveries,
commit the watch states and outbox rows in one transaction, then hand the
events to the notifier channels. SIGHUP (or ``POST /-/reload``) re-reads the config; a bad one is
refused and the running one stays. Under systemd the daemon reports READY
once every watch was polled once, RELOADING/READY around a reload, STOPPING,
a STATUS line, and WATCHDOG pings from the event loop. With ``http.listen``
it serves probes, metrics, ``/watches`` and the watch API. Shutdown (SIGTERM, SIGINT, or
:meth:`Daemon.request_stop`): polling stops, pending notifications go out within
``delivery.drain_timeout``, what is left is reported by ``event_id`` (and stays in
the outbox for the next start).
"""

from __future__ import annotations

import contextlib
import ctypes
import random
import signal
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from watcher import __version__
from watcher.clock import Clock, SystemClock
from watcher.config.loader import ConfigError, load_config
from watcher.config.model import WatcherConfig
from watcher.config.notifications import build_routes
from watcher.config.operations import is_loopback
from watcher.config.settings import Settings
from watcher.core.sharding import Shard
from watcher.core.statuses import Source
from watcher.daemon import gc_policy, liveness
from watcher.daemon.api_watches import (
    ApiWatch,
)
from watcher.daemon.build import (
    build_channels,
    build_gates,
    build_shard,
    check_credentials,
    open_clients,
)
from watcher.daemon.cluster import build_cluster, join_cluster
from watcher.daemon.durability import Durability
from watcher.daemon.http_api import ControlApi, serve_endpoints
from watcher.daemon.incident_desk import IncidentDesk
from watcher.daemon.incident_refs import ClusterRefs, DurableRefs
from watcher.daemon.logging import SCRUBBER
from watcher.daemon.loop_lag import watch_loop_lag
from watcher.daemon.metrics import Metrics
from watcher.daemon.outbox import Outbox
from watcher.daemon.overrides import Overrides
from watcher.daemon.realtime import RealtimeFeed
from watcher.daemon.sdnotify import SystemdNotifier
from watcher.daemon.state import StateStore, Stored, WatchWrite
from watcher.daemon.streams import GroupStreams
from watcher.daemon.views import WatchStatus, once_row, status_line
from watcher.daemon.watcher import Watcher
from watcher.http_server import HttpServer
from watcher.notify.channel import NotifierChannel
from watcher.sources.gate import Ticket
from watcher.sources.parallel import ParallelClient
from watcher.sources.trigger import ListFilter, ListPass, TriggerClient

__all__ = ["Daemon", "WatchStatus", "build_channels", "check_credentials"]


def _release_free_memory() -> None:
    """Hand the start-up's freed heap (parsed YAML, validation) back to the OS (glibc)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


log = structlog.get_logger("watcher.daemon")


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
        systemd: SystemdNotifier | None = None,
        hostname: str | None = None,
    ) -> None:
        check_credentials(config, settings)
        SCRUBBER.add(settings.secret_values())
        self.shard: Shard = build_shard(config.shard, hostname or liveness.hostname())
        self.clock = clock or SystemClock()
        self.cluster = (
            build_cluster(
                config.cluster,
                hostname=hostname or liveness.hostname(),
                clock=self.clock,
                retention=config.retention,
                send_deadline=config.delivery.timeout + config.delivery.connect_timeout,
            )
            if config.cluster is not None
            else None
        )
        self.config = config
        self.settings = settings
        self.config_path = config_path
        self.rng = rng or random.Random()
        self._transport = transport
        store = StateStore(config.state_file) if config.state_file is not None else None
        self.durability = Durability(store, self.clock)
        self.metrics = Metrics(self) if config.http.listen else None
        self.outbox = Outbox(
            self.durability,
            self.clock,
            routes=build_routes(config.routes, config.notifications),
            silences=[s.silence(i) for i, s in enumerate(config.silences)],
            state_file=config.state_file,
            on_published=self.metrics.published if self.metrics is not None else None,
            flaps=config.notifications.flapping.policy(),
        )
        self.dispatcher = self.outbox.dispatcher
        self.refs = DurableRefs(self.durability)
        """What notifiers that keep incidents did for each (a page, a Slack message)."""
        if self.cluster is not None:
            self.outbox.shared = self.dispatcher.sends = self.cluster
            self.refs = ClusterRefs(self.durability, self.cluster.redis)
        self.incident_desk = IncidentDesk(self.dispatcher, self.cluster)
        if self.cluster is not None:
            self.cluster.on_acks = self.incident_desk.apply_requests
        self.channels = (
            list(channels)
            if channels is not None
            else build_channels(
                config,
                self.clock,
                str(config_path) if config_path is not None else "config",
                log=self.outbox,
                refs=self.refs,
            )
        )
        self.dispatcher.configure(self.dispatcher.routes, self.dispatcher.silences, self.channels)
        self._stop = anyio.Event()
        self.ready = anyio.Event()
        self.watcher: Watcher | None = None
        self.reloads = 0
        self._own_systemd = systemd is None
        self.systemd = systemd if systemd is not None else SystemdNotifier.from_environ()
        self.http: HttpServer | None = None
        self.overrides = Overrides(lambda: self.config, self.clock, self.durability, self.outbox)
        self.started_at = self.clock.wall().timestamp()
        self._started = self.clock.now()

    # -- start -------------------------------------------------------------------------------

    async def _build(
        self, stack: AsyncExitStack, *, publish: bool = True, stored: Stored | None = None
    ) -> Watcher:
        gates = build_gates(self.config.sources, self.clock, self.shard.count)
        clients = await open_clients(stack, self.config, self.settings, gates, self._transport)
        watcher = Watcher(
            polling=self.config.polling,
            sources=self.config.sources,
            clock=self.clock,
            rng=self.rng,
            gates=gates,
            clients=clients,
            workers={source: int(gate.limiter.total_tokens) for source, gate in gates.items()},
            retention=self.config.retention,
            shard=self.cluster if self.cluster is not None and publish else self.shard,
            persist=self.durability.enabled or self.cluster is not None,
            **({"publish": self.outbox.publish} if publish else {}),
        )
        parallel = clients.get(Source.PARALLEL)
        if isinstance(parallel, ParallelClient) and self.config.sources.parallel.max_streams > 0:
            watcher.streams = GroupStreams(
                watcher,
                parallel,
                gates[Source.PARALLEL],
                self.config.sources.parallel,
                clock=self.clock,
                rng=self.rng,
            )
        trigger = clients.get(Source.TRIGGER)
        if isinstance(trigger, TriggerClient) and trigger.realtime is not None:
            # The environment: the client's base URL and the key's environment (never the key).
            url = trigger.realtime.upstream.client.base_url
            feed_name = f"trigger:{str(url).rstrip('/')}:{trigger.environment or '-'}"
            durability = self.durability

            async def save(data: dict[str, Any]) -> bool:
                return await durability.feed(feed_name, data)

            async def lister(flt: ListFilter, pages: int, api: TriggerClient = trigger) -> ListPass:
                return await api.list_all(flt, Ticket(gates[Source.TRIGGER]), max_pages=pages)

            watcher.realtime = RealtimeFeed(
                watcher,
                trigger.realtime,
                self.config.sources.trigger,
                clock=self.clock,
                rng=self.rng,
                saved=stored.feeds.get(feed_name) if stored is not None else None,
                save=save if durability.enabled else None,
                lister=lister,
                environment=trigger.environment,
            )
            watcher.on_added = watcher.realtime.added
        if self.metrics is not None:
            watcher.on_poll = self.metrics.poll
            for client in clients.values():
                for upstream in client.upstreams:
                    upstream.observer = self.metrics.request
        self.watcher = watcher
        return watcher

    async def _restore(self, watcher: Watcher, stored: Stored) -> None:
        if self.cluster is not None:
            stored.watches.clear()  # the cluster's copy is the one: read at each takeover
        deletions = watcher.restore(stored)
        self.refs.take(stored.incident_refs)
        await self.outbox.restore(stored)
        await self.outbox.keep(deletions)

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
            await self.outbox.keep(watcher.sweep(self.clock.wall().timestamp()))

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch until asked to stop; then drain notifications and return."""
        async with AsyncExitStack() as stack:
            stack.enter_context(gc_policy.steady())
            stack.callback(gc_policy.unsettle)
            stored = await self.durability.open()
            stack.push_async_callback(self.durability.close)
            if self._own_systemd:
                stack.callback(self.systemd.close)
            with gc_policy.building():
                watcher = await self._build(stack, stored=stored)
                for watch in watcher.mine(self.config.watches):
                    watcher.add(watch)
                self.overrides.restore(watcher, stored)
                await self._restore(watcher, stored)
            if self.cluster is not None:
                await join_cluster(self.cluster, watcher, self.outbox, self.overrides)
                stack.push_async_callback(self.cluster.leave)
            if not watcher.registry:
                watcher.first_pass.set()
            async with anyio.create_task_group() as root:
                if handle_signals:
                    root.start_soon(self._signals)
                if self.config.http.listen:
                    await self._serve_http(root)
                if self.systemd.enabled:
                    root.start_soon(liveness.systemd_status, self, self.systemd)
                root.start_soon(self.overrides.expirer)
                if self.cluster is not None:
                    root.start_soon(self.cluster.run)
                if self.metrics is not None:
                    root.start_soon(watch_loop_lag, self.metrics.loop_lag.observe)
                dispatch_scope = anyio.CancelScope()
                dispatch_done = anyio.Event()

                async def dispatch() -> None:
                    with dispatch_scope:
                        await self.dispatcher.run()
                    dispatch_done.set()

                root.start_soon(dispatch)
                root.start_soon(self._sweeper, watcher)
                root.start_soon(
                    liveness.heartbeats,
                    self,
                    self.outbox,
                    lambda: self.config.heartbeat,
                    self.ready,
                )
                log.info(
                    "run-watcher started",
                    version=__version__,
                    watches=len(self.config.watches),
                    notifiers=[channel.name for channel in self.channels],
                    state_file=str(self.config.state_file) if self.config.state_file else None,
                    shard=str(self.shard) if self.shard.count > 1 else None,
                    http=self.http.url if self.http else None,
                )
                if self.durability.enabled and not self.durability.healthy:
                    await self.outbox.announce_durability()
                if self.durability.store is not None and self.durability.store.quarantined:
                    await self.outbox.announce_fresh_start(self.durability.store.quarantined)
                async with anyio.create_task_group() as polling:
                    for scheduler in watcher.schedulers.values():
                        await polling.start(scheduler.run)
                    if watcher.streams is not None:
                        await polling.start(watcher.streams.run)
                    if watcher.realtime is not None:
                        await polling.start(watcher.realtime.run)
                    polling.start_soon(self._announce_ready, watcher)
                    task_status.started()
                    await self._stop.wait()
                    self.systemd.stopping()
                    polling.cancel_scope.cancel()
                self.dispatcher.close()
                dispatch_scope.deadline = anyio.current_time() + self.config.delivery.drain_timeout
                await dispatch_done.wait()
                self._report_leftovers(dispatch_scope.cancelled_caught)
                root.cancel_scope.cancel()
        log.info("run-watcher stopped", events=watcher.events_published)

    async def _announce_ready(self, watcher: Watcher) -> None:
        await watcher.first_pass.wait()
        gc_policy.settle()
        _release_free_memory()
        self.ready.set()
        self.systemd.ready(self.status_line())
        log.info("every watch polled once", watches=len(watcher.registry))

    # -- operations: systemd, HTTP, status -------------------------------------------------

    async def _serve_http(self, root: anyio.abc.TaskGroup) -> None:
        assert self.metrics is not None  # built whenever http.listen is set
        token = self.settings.watcher_api_token
        self.http = await serve_endpoints(
            root,
            ControlApi(
                self,
                self.overrides,
                metrics=self.metrics,
                reload=self.reload_from_file,
                token=token.get_secret_value() if token else None,
                loopback=is_loopback(self.config.http.listen_host),
                incidents=self.incident_desk,
            ),
            self.config.http,
        )

    def status_line(self) -> str:
        """One line for ``systemctl status``."""
        return status_line(self)

    @property
    def is_ready(self) -> bool:
        """Every watch was polled once."""
        return self.ready.is_set()

    @property
    def api_watches(self) -> Mapping[str, ApiWatch]:
        """Watches the API added."""
        return self.overrides.watches

    def uptime(self) -> float:
        """Seconds since the daemon was created."""
        return self.clock.now() - self._started

    def not_ready(self) -> list[str]:
        """Why ``/readyz`` fails (empty when ready)."""
        reasons = []
        if self._stop.is_set():
            reasons.append("shutting down")
        if not self.ready.is_set():
            note = self.watcher.pending_note() if self.watcher is not None else "0 pending"
            reasons.append(f"not every watch polled once yet ({note})")
        if not self.channels:
            reasons.append("no notifiers configured")
        return reasons

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
        self.systemd.reloading()
        try:
            return await self._reload(self.config_path)
        finally:
            self.systemd.ready(self.status_line())

    async def _reload(self, path: Path) -> bool:
        try:
            config = self.settings.apply_to(load_config(path))
            check_credentials(config, self.settings)
            channels = build_channels(
                config, self.clock, str(path), reuse=self.channels, log=self.outbox, refs=self.refs
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
        if config.http != old.http or config.shard != old.shard:
            log.warning("the http or shard section changed: restart to apply it")
        self.dispatcher.configure(
            build_routes(config.routes, config.notifications),
            self.overrides.all_silences(config),
            channels,
        )
        self.dispatcher.flap_policy = config.notifications.flapping.policy()
        self.channels = list(channels)
        writes: list[WatchWrite] = []
        if self.watcher is not None:
            configured = self.watcher.mine(config.watches)
            await self.overrides.yield_to_file(config)
            api = [a.watch for a in self.overrides.watches.values()]
            writes = self.watcher.reconfigure([*configured, *api], config.polling)
            self.watcher.retention = config.retention
        await self.outbox.forget(writes)
        self.config = config.model_copy(
            update={
                "sources": old.sources,
                "state_file": old.state_file,
                "http": old.http,
                "shard": old.shard,
            }
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
            runtimes = [watcher.add(watch) for watch in watcher.mine(self.config.watches)]
            async with anyio.create_task_group() as tg:
                for rt in runtimes:
                    tg.start_soon(watcher.poll, rt, Ticket(watcher.schedulers[rt.source].gate))
        return [once_row(rt) for rt in runtimes]
