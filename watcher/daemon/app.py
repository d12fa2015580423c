"""The running process: one task group owns the pollers, the dispatcher and signals.

Shutdown (SIGTERM, SIGINT, or :meth:`Daemon.request_stop`): polling stops, the
notification queues drain for at most ``delivery.drain_timeout``, whatever is
left is reported by ``event_id``, and :meth:`Daemon.run` returns.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import anyio
import httpx
import structlog
from anyio.abc import TaskStatus

from watcher import __version__
from watcher.clock import Clock, SystemClock
from watcher.config.loader import ConfigError
from watcher.config.model import NotifierConfig, WatcherConfig
from watcher.config.notifications import build_routes
from watcher.config.settings import DEFAULT_PARALLEL_URL, DEFAULT_TRIGGER_URL, Settings
from watcher.core.budget import BudgetPolicy
from watcher.core.events import Event
from watcher.core.statuses import Source
from watcher.core.watch import DiscoveryState, describe
from watcher.daemon.logging import SCRUBBER
from watcher.daemon.watcher import Watcher
from watcher.notify.apprise_sender import AppriseNotifier, url_secrets
from watcher.notify.channel import DeliveryPolicy, NotifierChannel
from watcher.notify.dispatcher import Dispatcher
from watcher.notify.templates import MessageRenderer, TemplateSpec
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.http import HttpLimits, Upstream, build_client
from watcher.sources.parallel import ParallelClient
from watcher.sources.trigger import TriggerClient

__all__ = ["Daemon", "WatchStatus", "build_channels", "check_credentials"]

log = structlog.get_logger("watcher.daemon")

_EVENT_BUFFER = 10_000


def check_credentials(config: WatcherConfig, settings: Settings) -> None:
    """Refuse to start when a watched upstream has no key; name the variables."""
    problems = []
    used = config.sources_used()
    if Source.PARALLEL in used and settings.parallel_api_key is None:
        problems.append(
            "PARALLEL_API_KEY is not set (needed by the parallel_* watches); "
            "set it, or PARALLEL_API_KEY_FILE, or the systemd credential parallel-api-key"
        )
    if Source.TRIGGER in used and settings.trigger_secret_key is None:
        problems.append(
            "TRIGGER_SECRET_KEY is not set (needed by the trigger_* watches); "
            "set it, or TRIGGER_SECRET_KEY_FILE, or the systemd credential trigger-secret-key"
        )
    if problems:
        raise ConfigError(problems)


def build_channels(
    config: WatcherConfig, clock: Clock | None = None, source: str = "config"
) -> list[NotifierChannel]:
    """A delivery channel per configured notifier; a bad URL is a config error naming its index."""
    clock = clock or SystemClock()
    d = config.delivery
    policy = DeliveryPolicy(
        max_attempts=d.max_attempts,
        retry_for=d.retry_for,
        initial_backoff=d.initial_backoff,
        max_backoff=d.max_backoff,
        queue_size=d.queue_size,
        json_max_bytes=d.json_max_bytes,
    )
    channels = []
    problems = []
    for index, cfg in enumerate(config.notifiers):
        try:
            notifier = _notifier(cfg, d.timeout, d.connect_timeout)
        except ValueError as exc:
            problems.append(f"{source}: notifiers[{index}].url: {exc}")
            continue
        renderer = MessageRenderer(
            family=notifier.family,
            fmt=cfg.format,
            spec=TemplateSpec(cfg.title_template, cfg.body_template, cfg.body_format),
            max_title=notifier.title_maxlen or 250,
        )
        channels.append(
            NotifierChannel(
                notifier,
                frozenset(cfg.tags),
                renderer,
                BudgetPolicy(cfg.max_per_minute / 60.0, cfg.burst),
                policy,
                clock,
                scrub=SCRUBBER.text,
            )
        )
    if problems:
        raise ConfigError(problems)
    return channels


def _notifier(cfg: NotifierConfig, timeout: float, connect_timeout: float) -> AppriseNotifier:
    url = cfg.resolve_url()
    SCRUBBER.add(url_secrets(url))
    return AppriseNotifier(
        url, timeout=timeout, connect_timeout=connect_timeout, name=cfg.name, scrub=SCRUBBER.text
    )


@dataclass(frozen=True, slots=True)
class WatchStatus:
    """One line of ``run-watcher once``."""

    key: str
    name: str
    state: str
    problem: str | None
    detail: str


class Daemon:
    """run-watcher's process: build the parts from config, run them, stop cleanly."""

    def __init__(
        self,
        config: WatcherConfig,
        settings: Settings,
        *,
        channels: Sequence[NotifierChannel] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        check_credentials(config, settings)
        SCRUBBER.add(settings.secret_values())
        self.config = config
        self.settings = settings
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
        )
        self._stop = anyio.Event()
        self.ready = anyio.Event()
        self.watcher: Watcher | None = None
        self._events_send, self._events_receive = anyio.create_memory_object_stream[Event](
            _EVENT_BUFFER
        )

    # -- construction of the upstream side ---------------------------------------------

    def _gates(self) -> dict[Source, SourceGate]:
        cfg = self.config.sources
        return {
            Source.PARALLEL: SourceGate(
                "parallel",
                BudgetPolicy(
                    cfg.parallel.requests_per_minute / 60.0,
                    cfg.parallel.burst,
                    cfg.parallel.reserve,
                ),
                max_concurrency=cfg.parallel.max_concurrency,
                clock=self.clock,
            ),
            Source.TRIGGER: SourceGate(
                "trigger",
                BudgetPolicy(
                    cfg.trigger.requests_per_minute / 60.0, cfg.trigger.burst, cfg.trigger.reserve
                ),
                max_concurrency=cfg.trigger.max_concurrency,
                clock=self.clock,
            ),
        }

    async def _build(self, stack: AsyncExitStack) -> Watcher:
        cfg = self.config.sources
        gates = self._gates()
        used = self.config.sources_used()
        agent = f"run-watcher/{__version__}"
        parallel = trigger = None
        if Source.PARALLEL in used:
            assert self.settings.parallel_api_key is not None
            limits = HttpLimits(
                connect_timeout=cfg.parallel.connect_timeout,
                read_timeout=cfg.parallel.timeout,
                total_timeout=cfg.parallel.total_timeout,
                stream_timeout=cfg.parallel.stream_timeout,
                stream_idle_timeout=cfg.parallel.stream_idle_timeout,
                max_connections=cfg.parallel.max_concurrency,
            )
            client = await stack.enter_async_context(
                build_client(
                    self.settings.parallel_base_url
                    or cfg.parallel.base_url
                    or DEFAULT_PARALLEL_URL,
                    {
                        "x-api-key": self.settings.parallel_api_key.get_secret_value(),
                        "user-agent": agent,
                    },
                    limits,
                    transport=self._transport,
                )
            )
            parallel = ParallelClient(
                Upstream("parallel", client, gates[Source.PARALLEL], limits),
                prefix=cfg.parallel.api_prefix,
                max_stream_events=cfg.parallel.max_stream_events,
            )
        if Source.TRIGGER in used:
            assert self.settings.trigger_secret_key is not None
            limits = HttpLimits(
                connect_timeout=cfg.trigger.connect_timeout,
                read_timeout=cfg.trigger.timeout,
                total_timeout=cfg.trigger.total_timeout,
                max_connections=cfg.trigger.max_concurrency,
            )
            client = await stack.enter_async_context(
                build_client(
                    self.settings.trigger_api_url or cfg.trigger.base_url or DEFAULT_TRIGGER_URL,
                    {
                        "authorization": f"Bearer {self.settings.trigger_secret_key.get_secret_value()}",
                        "x-trigger-api-version": self.settings.trigger_api_version
                        or cfg.trigger.api_version,
                        "user-agent": agent,
                    },
                    limits,
                    transport=self._transport,
                )
            )
            trigger = TriggerClient(Upstream("trigger", client, gates[Source.TRIGGER], limits))
        watcher = Watcher(
            polling=self.config.polling,
            sources=cfg,
            clock=self.clock,
            rng=self.rng,
            emit=self._events_send.send,
            gates=gates,
            parallel=parallel,
            trigger=trigger,
            workers={
                Source.PARALLEL: cfg.parallel.max_concurrency,
                Source.TRIGGER: cfg.trigger.max_concurrency,
            },
        )
        self.watcher = watcher
        return watcher

    # -- lifecycle ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a clean shutdown."""
        self._stop.set()

    async def _signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal received; shutting down", signal=signal.Signals(signum).name)
                self.request_stop()
                return

    async def run(
        self,
        *,
        handle_signals: bool = True,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch until asked to stop; then drain notifications and return."""
        async with AsyncExitStack() as stack, anyio.create_task_group() as root:
            watcher = await self._build(stack)
            if handle_signals:
                root.start_soon(self._signals)
            dispatch_scope = anyio.CancelScope()
            dispatch_done = anyio.Event()

            async def dispatch() -> None:
                with dispatch_scope:
                    await self.dispatcher.run(self._events_receive)
                dispatch_done.set()

            root.start_soon(dispatch)
            log.info(
                "run-watcher started",
                version=__version__,
                watches=len(self.config.watches),
                notifiers=[channel.name for channel in self.channels],
            )
            async with self._events_send, anyio.create_task_group() as polling:
                for scheduler in watcher.schedulers.values():
                    await polling.start(scheduler.run)
                for watch in self.config.watches:
                    watcher.add(watch)
                if not self.config.watches:
                    watcher.first_pass.set()
                polling.start_soon(self._announce_ready, watcher)
                task_status.started()
                await self._stop.wait()
                polling.cancel_scope.cancel()
            dispatch_scope.deadline = anyio.current_time() + self.config.delivery.drain_timeout
            await dispatch_done.wait()
            self._report_leftovers(dispatch_scope.cancelled_caught)
            root.cancel_scope.cancel()
        log.info("run-watcher stopped", events=watcher.events_emitted)

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
            )
        elif timed_out:
            log.warning("shutdown deadline reached while delivering")
        else:
            log.info("notification queues drained")

    async def once(self) -> list[WatchStatus]:
        """Poll every configured watch once, without notifying; report where each stands."""

        async def discard(_: Event) -> None:
            return None

        async with AsyncExitStack() as stack:
            watcher = await self._build(stack)
            watcher.emit = discard
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
