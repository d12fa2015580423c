"""The simulator as a process of its own, its world built from a JSON spec.

``python -m bench.simserver --port P --spec spec.json`` where the spec holds
``trigger_runs``, ``parallel_runs`` (lists of ``[prefix, count, status]``, with
an optional fourth element: how many seconds ago the runs last changed),
``groups`` (``[prefix, count, runs_each, status]``), ``trigger_tags`` (N: run i of
each ``trigger_runs`` entry carries the tag ``part-{i % N}``), ``limiter`` (false turns
Trigger.dev's rate limiter off, for measuring raw throughput) and ``realtime``
(``{cap, long_poll}`` of the realtime shapes).
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

import anyio

from watcher.http_server import HttpServer
from watcher.simulator.api import SimulatorApi, TriggerLimiter
from watcher.simulator.realtime import RealtimeServer
from watcher.simulator.world import World, _ts


def build(spec: dict[str, object]) -> tuple[World, TriggerLimiter]:
    """The world and limiter a spec describes."""
    world = World()
    parts = int(spec.get("trigger_tags", 0))  # type: ignore[call-overload]
    for prefix, count, status, *age in spec.get("trigger_runs", []):  # type: ignore[attr-defined]
        for i in range(count):
            tags = [f"part-{i % parts}"] if parts else None
            run = world.add_trigger_run(f"{prefix}{i}", "bench-task", status, tags=tags)
            if age:
                run.updated_at = _ts(datetime.now(UTC) - timedelta(seconds=age[0]), "milliseconds")
    for prefix, count, status, *age in spec.get("parallel_runs", []):  # type: ignore[attr-defined]
        for i in range(count):
            prun = world.add_parallel_run(f"{prefix}{i}", status)
            if age:
                prun.modified_at = prun.created_at = _ts(
                    datetime.now(UTC) - timedelta(seconds=age[0])
                )
    for prefix, count, runs, status in spec.get("groups", []):  # type: ignore[attr-defined]
        for i in range(count):
            world.add_group(f"{prefix}{i}", runs, status=status)
    limiter = (
        TriggerLimiter()
        if spec.get("limiter", True)
        else TriggerLimiter(refill=10**9, interval=1.0, capacity=10**9)
    )
    return world, limiter


async def serve(port: int, spec: dict[str, object]) -> None:
    """Serve until killed. ``realtime`` in the spec sets the realtime shapes' ``cap``
    (runs per multi-run shape) and ``long_poll`` (seconds)."""
    world, limiter = build(spec)
    options = spec.get("realtime") or {}
    assert isinstance(options, dict)
    realtime = RealtimeServer(
        world, cap=int(options.get("cap", 1000)), long_poll=float(options.get("long_poll", 20.0))
    )
    api = SimulatorApi(world, limiter=limiter, realtime=realtime)
    server = HttpServer(api, "127.0.0.1", port)
    await server.serve()


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = json.load(f)
    anyio.run(serve, args.port, spec)


if __name__ == "__main__":
    main()
