"""Run the real daemon against the simulator and a real webhook receiver, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from watcher.config.model import WatcherConfig
from watcher.config.settings import Settings
from watcher.daemon.app import Daemon
from watcher.http_server import HttpServer
from watcher.simulator.api import SimulatorApi, TriggerLimiter
from watcher.simulator.realtime import RealtimeServer
from watcher.simulator.receiver import Received, WebhookReceiver
from watcher.simulator.world import World

FAST_POLLING = {"min_interval": "100ms", "max_interval": "400ms", "discovery_interval": "200ms"}


class Served:
    """A server in its own cancel scope, so a test can take it down and bring it back."""

    def __init__(self, server: HttpServer, tg: TaskGroup) -> None:
        self.server = server
        self._tg = tg
        self._scope: anyio.CancelScope | None = None

    async def up(self) -> None:
        async def serve(
            *, task_status: TaskStatus[anyio.CancelScope] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            with anyio.CancelScope() as scope:
                await self.server.serve(task_status=_Forward(task_status, scope))

        self._scope = await self._tg.start(serve)

    def down(self) -> None:
        """Stop listening: connections are refused until :meth:`up`."""
        assert self._scope is not None
        self._scope.cancel()


class _Forward:
    """Reports the cancel scope of a served task once it listens."""

    def __init__(self, status: TaskStatus[anyio.CancelScope], scope: anyio.CancelScope) -> None:
        self._status = status
        self._scope = scope

    def started(self, value: object = None) -> None:
        self._status.started(self._scope)


@dataclass
class Env:
    """What a running test environment offers."""

    world: World
    sim: HttpServer
    api: SimulatorApi
    receiver: WebhookReceiver
    daemon: Daemon
    served: Served | None = None

    async def wait_events(self, count: int, within: float = 15.0) -> list[dict[str, Any]]:
        """Wait for ``count`` JSON events at the receiver; return them all."""
        with anyio.fail_after(within):
            await self.receiver.wait_for(count)
        return self.receiver.events()

    async def settle(self, polls: int = 2) -> list[dict[str, Any]]:
        """Wait until every watch polled ``polls`` more times and the notifiers are idle;
        return every event received so far (see :func:`settled`)."""
        await settled(self.daemon, polls=polls)
        return self.receiver.events()

    async def wait_until(
        self, predicate: Callable[[list[dict[str, Any]]], bool], within: float = 15.0
    ) -> list[dict[str, Any]]:
        """Wait until ``predicate(events)`` holds."""
        with anyio.fail_after(within):
            await self.receiver.wait_until(
                lambda received: predicate([e for r in received for e in r.events])
            )
        return self.receiver.events()


async def settled(daemon: Daemon, *, polls: int = 2, within: float = 20.0) -> None:
    """What a fixed sleep hoped for, as conditions: every watch still polled has been
    polled ``polls`` more times (had a poll repeated an event, it was published then),
    and every notifier has sent what it held (or is given up on).
    """
    watcher = daemon.watcher
    assert watcher is not None, "the daemon is not running"
    before = {k: rt.polls for k, rt in watcher.registry.items() if rt.finished_at is None}

    def polled() -> bool:
        for key, count in before.items():
            rt = watcher.registry.get(key)
            live = rt is not None and not rt.removed and rt.finished_at is None
            if live and rt is not None and rt.polls < count + polls:
                return False
        return True

    def idle() -> bool:
        return all(c.queued() == 0 or c.failing for c in daemon.channels)

    with anyio.fail_after(within):
        while not polled():  # noqa: ASYNC110 - observing the daemon's poll counters
            await anyio.sleep(0.02)
        while not idle():  # noqa: ASYNC110 - observing the notifiers' queues
            await anyio.sleep(0.02)


def make_config(
    sim_url: str,
    notifier_urls: list[tuple[str, list[str], str]] | list[dict[str, Any]],
    **sections: Any,
) -> WatcherConfig:
    """A validated config pointing both sources at the simulator.

    Notifiers are ``(url, tags, format)`` tuples or full config mappings.
    """
    data: dict[str, Any] = {
        "polling": FAST_POLLING,
        "sources": {
            "parallel": {"base_url": sim_url},
            # The polling tests poll; tests/e2e/test_realtime.py turns the feed on.
            "trigger": {"base_url": sim_url, "reserve": 0, "realtime": False},
        },
        "notifiers": [
            n if isinstance(n, dict) else {"url": n[0], "tags": n[1], "format": n[2]}
            for n in notifier_urls
        ],
        # No grouping delays unless a test asks for them: latency-sensitive assertions.
        "notifications": {"group_wait": "0s", "group_interval": "0s"},
        "delivery": {
            "initial_backoff": "50ms",
            "max_backoff": "200ms",
            "drain_timeout": "3s",
            "timeout": "5s",
        },
    }
    return WatcherConfig.model_validate(merge(data, sections))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` laid over ``base``, mappings merged recursively."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@asynccontextmanager
async def running(
    watches: list[dict[str, Any]],
    *,
    world: World | None = None,
    setup: Callable[[World], object] | None = None,
    fmt: str = "json",
    limiter: TriggerLimiter | None = None,
    settings: Settings | None = None,
    notifiers: list[dict[str, Any]] | None = None,
    daemon_options: dict[str, Any] | None = None,
    realtime: RealtimeServer | None = None,
    **sections: Any,
) -> AsyncIterator[Env]:
    """Simulator + receiver + daemon; stops the daemon cleanly on exit."""
    world = world or World()
    if setup is not None:
        setup(world)
    api = SimulatorApi(world, limiter=limiter, realtime=realtime)
    sim = HttpServer(api)
    receiver = WebhookReceiver()
    async with anyio.create_task_group() as tg:
        served = Served(sim, tg)
        await served.up()
        await tg.start(receiver.server.serve)
        default = [{"url": receiver.apprise_url("json"), "tags": ["all"], "format": fmt}]
        config = make_config(sim.url, notifiers or default, watches=watches, **sections)
        daemon = Daemon(
            config,
            settings
            or Settings(parallel_api_key=world.parallel_key, trigger_secret_key=world.trigger_key),
            **(daemon_options or {}),
        )
        async with run_daemon(daemon):
            yield Env(world, sim, api, receiver, daemon, served)
        tg.cancel_scope.cancel()


@asynccontextmanager
async def run_daemon(daemon: Daemon) -> AsyncIterator[Daemon]:
    """Run ``daemon`` until the context exits, then stop it cleanly."""
    done = anyio.Event()

    async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await daemon.run(handle_signals=False, task_status=task_status)
        done.set()

    async with anyio.create_task_group() as tg:
        await tg.start(run)
        with anyio.fail_after(15):
            await daemon.ready.wait()
        try:
            yield daemon
        finally:
            daemon.request_stop()
            with anyio.fail_after(15):
                await done.wait()


@asynccontextmanager
async def receivers(count: int, **kwargs: Any) -> AsyncIterator[list[WebhookReceiver]]:
    """``count`` webhook receivers on loopback, each with its own port."""
    servers = [WebhookReceiver(**kwargs) for _ in range(count)]
    async with anyio.create_task_group() as tg:
        for server in servers:
            await tg.start(server.server.serve)
        yield servers
        tg.cancel_scope.cancel()


def titles(received: list[Received]) -> list[str]:
    """The titles of received text notifications."""
    return [r.title for r in received]


class Stage:
    """A simulator and a receiver that outlive several daemons (restart tests)."""

    def __init__(
        self, world: World, sim: HttpServer, receiver: WebhookReceiver, state: Path
    ) -> None:
        self.world = world
        self.sim = sim
        self.receiver = receiver
        self.state = state

    def daemon(
        self, watches: list[dict[str, Any]], config_path: Path | None = None, **sections: Any
    ) -> Daemon:
        notifiers = [
            {
                "url": self.receiver.apprise_url("json"),
                "tags": ["all"],
                "format": "json",
                "name": "audit",
            }
        ]
        config = make_config(
            self.sim.url, notifiers, watches=watches, state_file=str(self.state), **sections
        )
        settings = Settings(
            parallel_api_key=self.world.parallel_key, trigger_secret_key=self.world.trigger_key
        )
        return Daemon(config, settings, config_path=config_path)

    async def events_until(self, predicate: Any, within: float = 15.0) -> list[dict[str, Any]]:
        with anyio.fail_after(within):
            await self.receiver.wait_until(lambda rs: predicate([e for r in rs for e in r.events]))
        return self.receiver.events()


@asynccontextmanager
async def stage(tmp_path: Path, world: World) -> AsyncIterator[Stage]:
    """The simulator of ``world`` and a receiver on loopback; the state file in ``tmp_path``."""
    sim = HttpServer(SimulatorApi(world))
    receiver = WebhookReceiver()
    async with anyio.create_task_group() as tg:
        await tg.start(sim.serve)
        await tg.start(receiver.server.serve)
        yield Stage(world, sim, receiver, tmp_path / "state.db")
        tg.cancel_scope.cancel()
