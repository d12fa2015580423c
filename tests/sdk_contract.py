"""Helpers of the SDK contract tests (tests/contract): the simulator on loopback, the
Trigger.dev SDK client script, and the simulator's record of requests."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from watcher.http_server import HttpServer
from watcher.simulator.api import SimulatorApi, TriggerLimiter
from watcher.simulator.realtime import RealtimeServer
from watcher.simulator.world import World

SDK_DIR = Path(__file__).parent / "contract" / "trigger_sdk"
Seen = tuple[str, str, dict[str, list[str]], dict[str, str]]


@asynccontextmanager
async def simulator(world: World, realtime: RealtimeServer | None = None) -> AsyncIterator[str]:
    """The simulator of ``world`` on loopback, its limiter out of the way; yields its URL."""
    limiter = TriggerLimiter(refill=100_000, capacity=100_000)
    server = HttpServer(SimulatorApi(world, limiter=limiter, realtime=realtime))
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        yield server.url
        tg.cancel_scope.cancel()


async def trigger_sdk(
    node: str, which: str, url: str, key: str, operations: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run ``operations`` with the ``current`` (4.x) or ``legacy`` (3.x) Trigger.dev SDK."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "TRIGGER_API_URL": url,
        "TRIGGER_SECRET_KEY": key,
    }
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [node, str(SDK_DIR / "client.cjs"), which],
            input=json.dumps(operations).encode(),
            env=env,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def values(results: list[dict[str, Any]]) -> list[Any]:
    """Each operation's value; fails with the SDK's own words when it rejected a response."""
    rejected = [r for r in results if not r["ok"]]
    assert not rejected, "the SDK rejected a response: " + "; ".join(
        f"{r['error']}: {r['message'][:1500]}" for r in rejected
    )
    return [r["value"] for r in results]


def requests_since(world: World, mark: int) -> list[Seen]:
    """The upstream requests the simulator received after the ``mark``-th."""
    return list(world.seen)[mark:]
