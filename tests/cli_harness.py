"""Helpers of the CLI tests: the command, a clean environment, a config file, the
simulator and a receiver on loopback, a free port."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import yaml

from watcher.http_server import HttpServer
from watcher.simulator.api import SimulatorApi
from watcher.simulator.receiver import WebhookReceiver
from watcher.simulator.world import World

CLI = [sys.executable, "-m", "watcher"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PARALLEL_", "TRIGGER_", "WATCHER_", "CREDENTIALS_"))
    }
    env.update(extra)
    return env


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "watcher.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@asynccontextmanager
async def simulator_and_receiver(world: World) -> AsyncIterator[tuple[HttpServer, WebhookReceiver]]:
    sim = HttpServer(SimulatorApi(world))
    receiver = WebhookReceiver()
    async with anyio.create_task_group() as tg:
        await tg.start(sim.serve)
        await tg.start(receiver.server.serve)
        yield sim, receiver
        tg.cancel_scope.cancel()


def sim_env(sim: HttpServer, world: World, config: Path) -> dict[str, str]:
    return clean_env(
        PARALLEL_BASE_URL=sim.url,
        TRIGGER_API_URL=sim.url,
        PARALLEL_API_KEY=world.parallel_key,
        TRIGGER_SECRET_KEY=world.trigger_key,
        WATCHER_CONFIG=str(config),
    )


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
