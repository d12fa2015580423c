"""The baselines: bare client loops issuing the watcher's requests, nothing else.

``python -m bench.bare --url U --paths FILE --concurrency N --seconds S [--client C]
[--clients K]`` prints ``{"requests": n, "seconds": s, "cpu": c}``: ``N`` tasks walk
the paths round robin, as fast as the server answers, over ``K`` clients of ``N / K``
connections each (the daemon's layout: one client per upstream). ``C`` is ``httpx``
(httpcore's transport), ``httpx-aiohttp`` (httpx's API on aiohttp's transport) or
``aiohttp``. Each response body is parsed as JSON, as the daemon does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx

from bench.common import PARALLEL_KEY, TRIGGER_KEY

HEADERS = {
    "x-api-key": PARALLEL_KEY,
    "authorization": f"Bearer {TRIGGER_KEY}",
    "x-trigger-api-version": "2025-07-16",
}


async def _getters(
    stack: AsyncExitStack, client: str, url: str, clients: int, connections: int
) -> list[Callable[[str], Awaitable[Any]]]:
    """One GET function per client object."""
    getters: list[Callable[[str], Awaitable[Any]]] = []
    for _ in range(clients):
        match client:
            case "httpx" | "httpx-aiohttp":
                limits = httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                )
                transport: httpx.AsyncBaseTransport | None = None
                if client == "httpx-aiohttp":
                    from httpx_aiohttp import AiohttpTransport

                    transport = AiohttpTransport(limits=limits)
                http = await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=url,
                        headers=HEADERS,
                        limits=limits,
                        timeout=30,
                        transport=transport,
                    )
                )

                async def get(path: str, http: httpx.AsyncClient = http) -> Any:
                    return (await http.get(path)).json()

            case "aiohttp":
                import aiohttp

                session = await stack.enter_async_context(
                    aiohttp.ClientSession(
                        base_url=url,
                        headers=HEADERS,
                        connector=aiohttp.TCPConnector(limit=connections),
                        timeout=aiohttp.ClientTimeout(total=30),
                    )
                )

                async def get(path: str, session: Any = session) -> Any:
                    async with session.get(path) as response:
                        return json.loads(await response.read())

            case _:
                raise SystemExit(f"unknown client {client!r}")
        getters.append(get)
    return getters


async def run(
    url: str,
    paths: list[str],
    concurrency: int,
    seconds: float,
    client: str = "httpx",
    clients: int = 1,
) -> dict[str, float]:
    """Issue requests for ``seconds``; count them."""
    cycle = itertools.cycle(paths)
    count = 0
    async with AsyncExitStack() as stack:
        getters = await _getters(stack, client, url, clients, max(1, concurrency // clients))
        started = time.monotonic()
        cpu = time.process_time()
        end = started + seconds

        async def worker(get: Callable[[str], Awaitable[Any]]) -> None:
            nonlocal count
            while time.monotonic() < end:
                await get(next(cycle))
                count += 1

        await asyncio.gather(*(worker(getters[i % clients]) for i in range(concurrency)))
        return {
            "requests": count,
            "seconds": time.monotonic() - started,
            "cpu": time.process_time() - cpu,
        }


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--paths", required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--client", default="httpx")
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    with open(args.paths) as f:
        paths = f.read().split()
    result = asyncio.run(
        run(args.url, paths, args.concurrency, args.seconds, args.client, args.clients)
    )
    print(json.dumps(result), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
