"""The baseline: a bare httpx loop issuing the watcher's requests, nothing else.

``python -m bench.bare --url U --paths FILE --concurrency N --seconds S`` prints
``{"requests": n, "seconds": s, "cpu": c}``: ``N`` tasks walk the paths round
robin with one shared client, as fast as the server answers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import anyio
import httpx

from bench.common import PARALLEL_KEY, TRIGGER_KEY


async def run(url: str, paths: list[str], concurrency: int, seconds: float) -> dict[str, float]:
    """Issue requests for ``seconds``; count them."""
    headers = {
        "x-api-key": PARALLEL_KEY,
        "authorization": f"Bearer {TRIGGER_KEY}",
        "x-trigger-api-version": "2025-07-16",
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    cycle = itertools.cycle(paths)
    count = 0
    started = time.monotonic()
    cpu = time.process_time()
    end = started + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal count
        while time.monotonic() < end:
            response = await client.get(next(cycle))
            response.json()
            count += 1

    async with (
        httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client,
        anyio.create_task_group() as tg,
    ):
        for _ in range(concurrency):
            tg.start_soon(worker, client)
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
    args = parser.parse_args()
    with open(args.paths) as f:
        paths = f.read().split()
    result = anyio.run(run, args.url, paths, args.concurrency, args.seconds)
    print(json.dumps(result), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
