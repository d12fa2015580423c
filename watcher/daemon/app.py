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
import gc
import math
import os
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
from watcher.config.operations import is_loopback
from watcher.config.settings import Settings
from watcher.core.events import EventKind
from watcher.core.sharding import Shard
from watcher.core.silences import Silence
from watcher.core.statuses import Severity, Source
from watcher.core.watch import DiscoveryState, describe
from watcher.daemon.api_errors import Rejected
from watcher.daemon.api_silences import ApiSilence, restore_api_silences
from watcher.daemon.api_watches import (
    ApiWatch,
    WatchRequest,
    expired,
    next_expiry,
    restore_api_watches,
)
from watcher.daemon.build import (
    build_channels,
    build_gates,
    build_shard,
    check_credentials,
    open_clients,
)
from watcher.daemon.durability import Durability
from watcher.daemon.http_api import (
    MAX_REQUEST_BODY,
    ControlApi,
    watch_view,
)
from watcher.daemon.logging import SCRUBBER
from watcher.daemon.loop_lag import watch_loop_lag
from watcher.daemon.metrics import Metrics
from watcher.daemon.outbox import Outbox
from watcher.daemon.sdnotify import SystemdNotifier
from watcher.daemon.state import StateStore, Stored, WatchWrite
from watcher.daemon.streams import GroupStreams
from watcher.daemon.watcher import Watcher
from watcher.http_server import HttpServer
from watcher.notify.channel import NotifierChannel
from watcher.notify.dispatcher import watcher_event
from watcher.sources.gate import Ticket
from watcher.sources.parallel import ParallelClient
from watcher.upstreams.registry import plugin_for

__all__ = ["Daemon", "WatchStatus", "build_channels", "check_credentials"]


def _release_free_memory() -> None:
    """Hand the start-up's freed heap (parsed YAML, validation) back to the OS (glibc)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _hostname() -> str:
    """The pod name under Kubernetes (a StatefulSet pod's hostname is its name)."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or os.uname().nodename


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
        systemd: SystemdNotifier | None = None,
        hostname: str | None = None,
    ) -> None:
        check_credentials(config, settings)
        SCRUBBER.add(settings.secret_values())
        self.shard: Shard = build_shard(config.shard, hostname or _hostname())
        self.config = config
        self.settings = settings
        self.config_path = config_path
        self.clock = clock or SystemClock()
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
        )
        self.dispatcher = self.outbox.dispatcher
        self.channels = (
            list(channels)
            if channels is not None
            else build_channels(config, self.clock, log=self.outbox)
        )
        self.dispatcher.configure(self.dispatcher.routes, self.dispatcher.silences, self.channels)
        self._stop = anyio.Event()
        self.ready = anyio.Event()
        self.watcher: Watcher | None = None
        self.reloads = 0
        self._own_systemd = systemd is None
        self.systemd = systemd if systemd is not None else SystemdNotifier.from_environ()
        self.http: HttpServer | None = None
        self.api_watches: dict[str, ApiWatch] = {}
        self.api_silences: dict[str, ApiSilence] = {}
        self._expiry_changed = anyio.Event()
        self.started_at = self.clock.wall().timestamp()
        self._started = self.clock.now()

    # -- start -------------------------------------------------------------------------------

    async def _build(self, stack: AsyncExitStack, *, publish: bool = True) -> Watcher:
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
            shard=self.shard,
            persist=self.durability.enabled,
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
        if self.metrics is not None:
            watcher.on_poll = self.metrics.poll
            for client in clients.values():
                for upstream in client.upstreams:
                    upstream.observer = self.metrics.request
        self.watcher = watcher
        return watcher

    async def _restore(self, watcher: Watcher, stored: Stored) -> None:
        deletions = watcher.restore(stored)
        await self.outbox.restore(stored)
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
            if self._own_systemd:
                stack.callback(self.systemd.close)
            watcher = await self._build(stack)
            for watch in watcher.mine(self.config.watches):
                watcher.add(watch)
            self._restore_api_watches(watcher, stored)
            self.api_silences = restore_api_silences(stored.api_silences, self.clock.wall())
            self._install_silences()
            await self._restore(watcher, stored)
            if not watcher.registry:
                watcher.first_pass.set()
            async with anyio.create_task_group() as root:
                if handle_signals:
                    root.start_soon(self._signals)
                if self.config.http.listen:
                    await self._serve_http(root)
                if self.systemd.enabled:
                    root.start_soon(self._systemd_loop)
                root.start_soon(self._expirer)
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
                root.start_soon(self._heartbeat)
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
        gc.unfreeze()
        log.info("run-watcher stopped", events=watcher.events_published)

    async def _heartbeat(self) -> None:
        """``heartbeat``: a "watcher alive" message every interval, from the first READY.

        Read the config each time: a reload may add, change or remove the section.
        """
        await self.ready.wait()
        beat = 0
        while True:
            config = self.config.heartbeat
            if config is None:
                await anyio.sleep(60.0)
                continue
            beat += 1
            now = self.clock.wall()
            event = watcher_event(
                EventKind.WATCHER_HEARTBEAT,
                Severity.INFO,
                _hostname(),
                now,
                {
                    "status": self.status_line(),
                    "uptime_seconds": round(self.uptime(), 1),
                    "interval_seconds": config.interval,
                    "version": __version__,
                    "to": "alive",
                },
                self.started_at,
                beat,
            )
            sent = await self.dispatcher.heartbeat(event, config.notify)
            log.debug("heartbeat queued", notifiers=sent)
            await anyio.sleep(config.interval)

    async def _announce_ready(self, watcher: Watcher) -> None:
        await watcher.first_pass.wait()
        # What exists now (config, clients, one runtime per watch) lives as long as
        # the process: keep it out of the cyclic GC's full passes, whose pauses
        # otherwise grow with the number of watches (measured: bench/scale.py).
        gc.collect()
        gc.freeze()
        _release_free_memory()
        self.ready.set()
        self.systemd.ready(self.status_line())
        log.info("every watch polled once", watches=len(watcher.registry))

    # -- operations: systemd, HTTP, status -------------------------------------------------

    async def _serve_http(self, root: anyio.abc.TaskGroup) -> None:
        address = self.config.http.address()
        assert address is not None
        host, port = address
        token = self.settings.watcher_api_token
        api = ControlApi(
            self,
            token=token.get_secret_value() if token else None,
            loopback=is_loopback(host),
        )
        if self.config.http.watch_api and token is None and not is_loopback(host):
            log.warning(
                "the watch API is off: the daemon listens beyond loopback and "
                "WATCHER_API_TOKEN is not set",
                listen=self.config.http.listen,
            )
        server = HttpServer(api.handle, host, port, max_body=MAX_REQUEST_BODY, head_timeout=10.0)
        try:
            await root.start(server.serve)
        except OSError as exc:
            raise ConfigError(
                [f"http.listen {self.config.http.listen}: cannot listen: {exc.strerror or exc}"]
            ) from None
        self.http = server

    async def _systemd_loop(self) -> None:
        """STATUS every few seconds; WATCHDOG=1 at half of WATCHDOG_USEC, from this loop,
        so a hung event loop stops the pings and systemd restarts the service."""
        watchdog = self.systemd.watchdog
        every = min(watchdog, 10.0) if watchdog else 10.0
        while True:
            fields = {"status": self.status_line()}
            if watchdog:
                fields["watchdog"] = "1"
            if not self.ready.is_set():
                # READY waits for the first pass, which the providers' budgets pace (2,000
                # Trigger.dev watches take ~100 s): keep systemd's start timeout ahead of it.
                fields["extend_timeout_usec"] = str(int(every * 3 * 1_000_000))
            self.systemd.send(**fields)
            await anyio.sleep(every)

    def status_line(self) -> str:
        """One line for ``systemctl status``: watches, errors, queued notifications."""
        watcher = self.watcher
        runtimes = list(watcher.registry.values()) if watcher is not None else []
        erroring = sum(1 for rt in runtimes if rt.problem is not None)
        queued = sum(c.queued() + len(c.inflight) for c in self.channels)
        line = f"watching {len(runtimes)}, {erroring} erroring, {queued} notifications queued"
        if watcher is not None and not self.ready.is_set():
            line = (
                f"first pass: {len(runtimes) - watcher.unpolled} of {len(runtimes)} polled; " + line
            )
        if not self.durability.healthy:
            line += ", state file unavailable"
        if self.shard.count > 1:
            line += f" (shard {self.shard})"
        return line

    def uptime(self) -> float:
        """Seconds since the daemon was created."""
        return self.clock.now() - self._started

    def not_ready(self) -> list[str]:
        """Why ``/readyz`` fails (empty when ready)."""
        reasons = []
        if self._stop.is_set():
            reasons.append("shutting down")
        if not self.ready.is_set():
            pending = self.watcher.unpolled if self.watcher is not None else 0
            reasons.append(f"not every watch polled once yet ({pending} pending)")
        if not self.channels:
            reasons.append("no notifiers configured")
        return reasons

    def watch_views(self) -> list[dict[str, object]]:
        """Every watch (not the runs a ``trigger_runs`` watch follows) for ``/watches``."""
        if self.watcher is None:
            return []
        keys = sorted(k for k, rt in self.watcher.registry.items() if rt.parent is None)
        return [v for k in keys if (v := watch_view(self, k)) is not None]

    # -- the watch API ---------------------------------------------------------------------

    def _restore_api_watches(self, watcher: Watcher, stored: Stored) -> None:
        configured = self._file_keys()
        for key, api in restore_api_watches(stored.api_watches).items():
            if key in configured or key in watcher.registry:
                continue
            self.api_watches[key] = api
            watcher.add(api.watch)
        if self.api_watches:
            log.info("watches added through the API restored", watches=len(self.api_watches))

    async def add_api_watch(self, request: WatchRequest) -> tuple[bool, dict[str, object]]:
        """Add (or update) a watch from ``POST /watches``; (created, its view)."""
        watcher = self.watcher
        if watcher is None:
            raise Rejected(503, ["the daemon is starting"])
        watch = request.watch
        key = watch.ref().key
        if key in self._file_keys():
            raise Rejected(409, [f"{key} is in the config file; change it there"])
        source = watch.ref().source
        if not watcher.can_poll(source):
            variable = plugin_for(source).credential.variable
            raise Rejected(422, [f"type: {watch.type} needs {variable}, which is not set"])
        created = key not in self.api_watches
        if created and len(self.api_watches) >= self.config.http.max_api_watches:
            raise Rejected(
                409, [f"http.max_api_watches ({self.config.http.max_api_watches}) reached"]
            )
        expires_at = (
            self.clock.wall().timestamp() + request.expire_after
            if request.expire_after is not None
            else None
        )
        self.api_watches[key] = ApiWatch(watch, request.entry, expires_at)
        await self.durability.api_watch(key, request.entry, expires_at)
        if created:
            watcher.add(watch)
            log.info("watch added through the API", watch=key, expires_at=expires_at)
        else:
            watcher.update(watch)
            log.info("watch updated through the API", watch=key, expires_at=expires_at)
        self._expiry_changed.set()
        view = watch_view(self, key) or {"key": key}
        return created, view

    async def remove_api_watch(self, key: str, *, reason: str = "removed through the API") -> None:
        """Stop a watch the API added (``DELETE /watches/{type}/{id}``, or expiry)."""
        if key not in self.api_watches:
            if key in self._file_keys():
                raise Rejected(409, [f"{key} is in the config file: remove it there, then reload"])
            raise Rejected(404, [f"no watch {key} was added through the API"])
        del self.api_watches[key]
        await self.outbox.forget(self.watcher.remove(key) if self.watcher is not None else [])
        await self.durability.api_watch(key, None)
        log.info(f"watch {reason}; polling stops", watch=key)

    async def _expirer(self) -> None:
        """Remove API watches and silences when their time is up."""
        while True:
            self._expiry_changed = anyio.Event()
            now = self.clock.wall()
            for key in expired(self.api_watches, now.timestamp()):
                await self.remove_api_watch(key, reason="expired (expire_after)")
            for ident in [i for i, s in self.api_silences.items() if s.ends_at <= now]:
                await self.remove_api_silence(ident, reason="ended")
            times = [s.ends_at.timestamp() for s in self.api_silences.values()]
            if (due := next_expiry(self.api_watches)) is not None:
                times.append(due)
            wait = max(0.05, min(times) - now.timestamp()) if times else math.inf
            with anyio.move_on_after(min(wait, 3600.0)):
                await self._expiry_changed.wait()

    # -- silences from the API -------------------------------------------------------------

    def _silences(self, config: WatcherConfig) -> list[Silence]:
        """The file's silences and the API's."""
        return [
            *(s.silence(i) for i, s in enumerate(config.silences)),
            *(a.silence() for a in self.api_silences.values()),
        ]

    def _install_silences(self) -> None:
        self.dispatcher.silences = tuple(self._silences(self.config))

    def _file_keys(self) -> set[str]:
        """The keys of the watches in the config file."""
        return {w.ref().key for w in self.config.watches}

    def silence_views(self) -> list[dict[str, object]]:
        """Every silence, from the file and the API, for ``GET /silences``."""
        now = self.clock.wall()
        views: list[dict[str, object]] = []
        for index, cfg in enumerate(self.config.silences):
            silence = cfg.silence(index)
            views.append(
                {
                    "id": silence.id,
                    "origin": "config",
                    "match": cfg.match,
                    "starts_at": cfg.starts_at.isoformat() if cfg.starts_at else None,
                    "ends_at": cfg.ends_at.isoformat() if cfg.ends_at else None,
                    "comment": cfg.comment,
                    "active": silence.active(now),
                }
            )
        views += [a.view(now) for a in self.api_silences.values()]
        return views

    async def add_api_silence(self, silence: ApiSilence) -> None:
        """Hold back matching events until the silence ends (``POST /silences``)."""
        self.api_silences[silence.id] = silence
        self._install_silences()
        await self.durability.api_silence(silence.id, silence.entry)
        self._expiry_changed.set()
        log.info(
            "silence added through the API",
            silence=silence.id,
            match=silence.entry["match"],
            ends_at=silence.entry["ends_at"],
            comment=silence.config.comment,
        )

    async def remove_api_silence(
        self, ident: str, *, reason: str = "removed through the API"
    ) -> None:
        """Lift a silence the API added."""
        if ident not in self.api_silences:
            if any(s.silence(i).id == ident for i, s in enumerate(self.config.silences)):
                raise Rejected(409, [f"silence {ident} is in the config file"])
            raise Rejected(404, [f"no silence {ident} was added through the API"])
        del self.api_silences[ident]
        self._install_silences()
        await self.durability.api_silence(ident, None)
        log.info(f"silence {reason}", silence=ident)

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
                config, self.clock, str(path), reuse=self.channels, log=self.outbox
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
            build_routes(config.routes, config.notifications), self._silences(config), channels
        )
        self.channels = list(channels)
        writes: list[WatchWrite] = []
        if self.watcher is not None:
            configured = self.watcher.mine(config.watches)
            keys = {w.ref().key for w in config.watches}
            for key in [k for k in self.api_watches if k in keys]:
                # The file now holds this watch: it takes over from the API's entry.
                del self.api_watches[key]
                await self.durability.api_watch(key, None)
            api = [a.watch for a in self.api_watches.values()]
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
