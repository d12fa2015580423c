"""A cluster's cost and its takeover: one replica against three on 10,000 watches.

``python -m bench.cluster [--watches N] [--window S] [--lease S]`` (about three minutes).
Side by side in one run, against one simulator process and one redis-server:

1. one daemon without ``cluster:`` (the baseline), 2. one replica with ``cluster:``,
3. three replicas. Each polls every watch every ``interval`` (min = max), so the demand
is fixed and what differs is what each setup costs: upstream requests per second (the
simulator's own count), Redis commands per poll (``INFO stats``), CPU per poll of each
replica, the simulator's and Redis's CPU share (neither is the bottleneck), and Redis
memory per watch. Then one replica is SIGKILLed and 50 of its runs fail at once: the
time to the first notification of each is the takeover.

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import redis

from bench.common import (
    daemon,
    free_port,
    json_notifier,
    median,
    proc_stats,
    receivers,
    simulator,
    watcher_config,
)

INTERVAL = "10s"


def _config(sim_url: str, hook: Any, total: int, cluster: dict[str, Any] | None) -> dict[str, Any]:
    source = {"requests_per_minute": 6_000_000, "burst": 100_000, "reserve": 0}
    config = watcher_config(
        sim_url,
        [json_notifier(hook)],
        [{"type": "trigger_run", "id": f"trs_{i}"} for i in range(total)],
        polling={"min_interval": INTERVAL, "max_interval": INTERVAL, "jitter": 0.1},
        sources={"trigger": {"base_url": sim_url, "realtime": False, **source}},
    )
    if cluster is not None:
        config["cluster"] = cluster
    return config


class Redis:
    """A redis-server process, persistence off."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(directory)),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def commands(self) -> int:
        return int(self.client.info("stats")["total_commands_processed"])

    def memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


async def _polls(proc: Any) -> float:
    samples = await proc.metrics()
    return sum(v for k, v in samples.items() if k.startswith("run_watcher_polls_total"))


async def _calls(proc: Any) -> float:
    return (await proc.metrics()).get("run_watcher_cluster_redis_calls_total", 0.0)


async def _window(
    procs: list[Any], sim: Any, store: Redis | None, seconds: float
) -> dict[str, Any]:
    polls0 = [await _polls(p) for p in procs]
    calls0 = sum([await _calls(p) for p in procs])
    cpu0 = [p.stats().cpu for p in procs]
    req0 = (await sim.stats())["requests"].get("trigger.run", 0)
    sim0 = proc_stats(sim.process.pid).cpu
    cmd0 = store.commands() if store else 0
    red0 = proc_stats(store.process.pid).cpu if store else 0.0
    t0 = time.monotonic()
    await anyio.sleep(seconds)
    elapsed = time.monotonic() - t0
    polls = [await _polls(p) - b for p, b in zip(procs, polls0, strict=True)]
    calls = sum([await _calls(p) for p in procs]) - calls0
    cpu = [p.stats().cpu - b for p, b in zip(procs, cpu0, strict=True)]
    requests = (await sim.stats())["requests"].get("trigger.run", 0) - req0
    out: dict[str, Any] = {
        "upstream_requests_per_second": requests / elapsed,
        "polls_per_second": sum(polls) / elapsed,
        "cpu_us_per_poll": [c / n * 1e6 if n else None for c, n in zip(cpu, polls, strict=True)],
        "replica_cpu_share": [c / elapsed for c in cpu],
        "simulator_cpu_share": (proc_stats(sim.process.pid).cpu - sim0) / elapsed,
    }
    if store is not None:
        # Commands counts those a script runs inside Redis; calls are the round trips.
        out["redis_commands_per_poll"] = (store.commands() - cmd0) / max(1.0, sum(polls))
        out["redis_calls_per_poll"] = calls / max(1.0, sum(polls))
        out["redis_cpu_share"] = (proc_stats(store.process.pid).cpu - red0) / elapsed
    return out


async def bench(total: int, window: float, lease: float) -> dict[str, Any]:
    """The three setups, then the takeover."""
    results: dict[str, Any] = {"watches": total, "interval": INTERVAL, "lease_s": lease}
    spec = {"trigger_runs": [["trs_", total, "EXECUTING"]], "limiter": False}
    directory = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    async with simulator(spec) as sim, receivers(1) as (hook,):
        async with daemon(_config(sim.url, hook, total, None)) as alone:
            await anyio.sleep(5)
            results["alone"] = await _window([alone], sim, None, window)
        store = Redis(directory)
        try:
            await anyio.sleep(0.5)
            empty = store.memory()
            cluster = {"redis_url": store.url, "lease": f"{lease}s"}
            async with daemon(
                _config(sim.url, hook, total, cluster), env={"POD_NAME": "solo"}
            ) as solo:
                await anyio.sleep(5)
                results["one_replica"] = await _window([solo], sim, store, window)
            async with AsyncExitStack() as stack:
                procs = [
                    await stack.enter_async_context(
                        daemon(_config(sim.url, hook, total, cluster), env={"POD_NAME": f"r{i}"})
                    )
                    for i in range(3)
                ]
                await anyio.sleep(lease)  # the leases settle on three owners
                results["three_replicas"] = await _window(procs, sim, store, window)
                results["redis_bytes_per_watch"] = (store.memory() - empty) / total
                results["takeover"] = await _takeover(procs, sim, hook, store, total)
        finally:
            store.stop()
    one, three = results["one_replica"], results["three_replicas"]
    results["requests_ratio_three_to_one"] = three["upstream_requests_per_second"] / max(
        1e-9, one["upstream_requests_per_second"]
    )
    alone_cpu = results["alone"]["cpu_us_per_poll"][0]
    results["cpu_per_poll_ratio_to_alone"] = [
        c / alone_cpu if c else None for c in three["cpu_us_per_poll"] + one["cpu_us_per_poll"]
    ]
    return results


async def _takeover(
    procs: list[Any], sim: Any, hook: Any, store: Redis, total: int
) -> dict[str, Any]:
    """SIGKILL replica 0; 50 of its runs fail at once; when does each get notified?"""
    owners = store.client.mget([f"run-watcher:lease:trigger_run:trs_{i}" for i in range(total)])
    victims = [f"trs_{i}" for i, o in enumerate(owners) if o and o.decode().startswith("r0/")]
    chosen = random.Random(7).sample(victims, min(50, len(victims)))
    seen = len(hook.received)
    procs[0].process.kill()
    killed = time.monotonic()
    for run_id in chosen:
        await sim.control(f"trigger/runs/{run_id}", {"status": "FAILED", "error": "bench"})
    arrivals: dict[str, float] = {}
    with anyio.move_on_after(120):
        while len(arrivals) < len(chosen):
            for message in hook.received[seen:]:
                for event in message.events:
                    if event["subject_id"] in chosen and event["subject_id"] not in arrivals:
                        arrivals[event["subject_id"]] = message.at - killed
            seen = len(hook.received)
            await anyio.sleep(0.1)
    delays = sorted(arrivals.values())
    return {
        "victim_watches": len(victims),
        "notified": len(delays),
        "of": len(chosen),
        "first_s": delays[0] if delays else None,
        "median_s": median(delays),
        "last_s": delays[-1] if delays else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--watches", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--lease", type=float, default=15.0)
    args = parser.parse_args()
    print(json.dumps(anyio.run(bench, args.watches, args.window, args.lease), indent=2))


if __name__ == "__main__":
    main()
