"""Trigger.dev's realtime feed against poll mode, side by side in one run.

Three modes watch the same 2,000 ``trigger_run`` watches on the same script:

- ``poll``: the realtime feed off; every run polled within the ``/api`` budget.
- ``feed``: the environment's shape holds every run (no cap).
- ``feed_capped``: the provider's newer backend caps a multi-run shape at 1,000 runs;
  the runs carry one of four tags (``part-0`` .. ``part-3``) and the daemon has 6
  connections, so the 1,000 left out are covered by tag shapes.

For each: the time from spawning the daemon to ``/readyz`` answering 200, then 60 s
of churn (20 runs cycling WAITING, EXECUTING, a retry and EXECUTING again every
4-6 s) measuring ``/api`` requests per transition, detection latency (p50/p99, each
notification against the latest entry into its status before it arrived) and that
every transition arrived once.

Then a storm: 2,000 covered runs fail within 10 s (concurrent control requests),
each failure timed from its request to its notification, and the ``/api`` requests
it cost. And start-up at 20,000 watches on the feed. Beside each figure: the
simulator's CPU share (it must not be the bottleneck) and a bare client reading the
same snapshot (the floor for "ready").
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import anyio
import httpx

from bench.common import (
    TRIGGER_KEY,
    Simulator,
    daemon,
    median,
    percentile,
    proc_stats,
    receivers,
    simulator,
    watcher_config,
)
from bench.latency import ROUTES, notifier_for
from watcher.sources.trigger_realtime import ELECTRIC_VERSION

WATCHES = 2000
CHANGING = 20
API = ("trigger.run", "trigger.list")
_CYCLE = (
    ("WAITING", True),
    ("EXECUTING", True),  # resumed: the same attempt
    ("RETRYING_AFTER_FAILURE", False),  # shows once it runs again, as run.retrying
    ("EXECUTING", True),
)


def _spec(runs: int, *, cap: int | None, tags: int = 0, limiter: bool = True) -> dict[str, Any]:
    return {
        "trigger_runs": [["trb_", runs, "EXECUTING", 3600]],
        "trigger_tags": tags,
        "limiter": limiter,
        "realtime": {"cap": cap if cap is not None else 10**9, "long_poll": 20.0},
    }


def _config(sim: Simulator, hook: Any, runs: int, mode: str, **trigger: Any) -> dict[str, Any]:
    watches = [
        {"type": "trigger_run", "id": f"trb_{i}", "mode": "poll" if mode == "poll" else "auto"}
        for i in range(runs)
    ]
    config = watcher_config(sim.url, [notifier_for(hook)], watches, routes=ROUTES)
    config["sources"]["trigger"].update(trigger)
    if mode == "poll":
        config["sources"]["trigger"]["realtime"] = False
    return config


async def bare_snapshot(sim: Simulator) -> float:
    """Seconds a bare client takes to read the environment shape's snapshot."""
    started = time.monotonic()
    params: dict[str, str] = {"offset": "-1", "log": "full", "createdAt": "1d"}
    headers = {
        "authorization": f"Bearer {TRIGGER_KEY}",
        "x-trigger-electric-version": ELECTRIC_VERSION,
    }
    async with httpx.AsyncClient(timeout=120) as client:
        while True:
            response = await client.get(
                f"{sim.url}/realtime/v1/runs", params=params, headers=headers
            )
            response.raise_for_status()
            if any(m.get("headers", {}).get("control") == "up-to-date" for m in response.json()):
                return time.monotonic() - started
            params["handle"] = response.headers["electric-handle"]
            params["offset"] = response.headers["electric-offset"]


async def _churn(sim: Simulator, run_id: str, rng: random.Random, entered: list[Any]) -> None:
    await anyio.sleep(rng.uniform(0, 5))
    step = 0
    while True:
        status, shown = _CYCLE[step % len(_CYCLE)]
        step += 1
        if shown:
            entered.append((run_id, status, time.monotonic()))
        await sim.control(f"trigger/runs/{run_id}", {"status": status})
        await anyio.sleep(rng.uniform(4, 6) if shown else 0.2)


def match(entered: list[Any], received: list[Any], *, since: float) -> tuple[list[float], int]:
    """Latencies of the notifications matched to an entry made after ``since``, and how
    many repeated one.

    Each event (``run.status_changed`` or ``run.retrying``) is matched to the latest
    entry of its run into its ``to_status`` before it arrived; a second event for the
    same entry is a repeat.
    """
    history: dict[tuple[str, str], list[float]] = {}
    for run, status, at in entered:
        history.setdefault((run, status), []).append(at)
    used: set[tuple[str, str, float]] = set()
    out, repeats = [], 0
    for message in received:
        for event in message.events:
            if event["kind"] not in {"run.status_changed", "run.retrying"}:
                continue
            key = (event["subject_id"], event["to_status"])
            before = [t for t in history.get(key, []) if t <= message.at]
            if not before:
                continue
            if before[-1] < since:
                continue
            if (*key, before[-1]) in used:
                repeats += 1
                continue
            used.add((*key, before[-1]))
            out.append(message.at - before[-1])
    return out, repeats


async def steady_once(mode: str, steady: float, seed: int) -> dict[str, Any]:
    """Ready time, then ``steady`` seconds of churn, in one ``mode``."""
    rng = random.Random(seed)
    capped = mode == "feed_capped"
    spec = _spec(WATCHES, cap=1000 if capped else None, tags=4 if capped else 0)
    extra = {"realtime_connections": 6, "realtime_cap": 1000} if capped else {}
    changing = [f"trb_{i}" for i in rng.sample(range(WATCHES), CHANGING)]
    entered: list[Any] = []
    async with simulator(spec) as sim, receivers(1) as (hook,):
        bare = await bare_snapshot(sim)
        config = _config(sim, hook, WATCHES, mode, **extra)
        sim0 = proc_stats(sim.process.pid)
        spawned = time.monotonic()
        async with daemon(config, wait_ready=False) as proc:
            # The changing runs change from the start (as in bench/budget.py): in poll mode
            # they are then polled at their active pace, not backed off to max_interval.
            async with anyio.create_task_group() as tg:
                for run_id in changing:
                    tg.start_soon(_churn, sim, run_id, rng, entered)
                await proc.wait_ready(900)
                ready = time.monotonic() - spawned
                sim_ready = proc_stats(sim.process.pid)
                await anyio.sleep(5)  # the extra shapes (if any) settle
                before = (await sim.stats())["requests"]
                cpu0, sim1 = proc.stats(), proc_stats(sim.process.pid)
                started = time.monotonic()
                await anyio.sleep(steady)
                tg.cancel_scope.cancel()
            await anyio.sleep(5)
            end = time.monotonic()
            after = (await sim.stats())["requests"]
            cpu1, sim2 = proc.stats(), proc_stats(sim.process.pid)
            metrics = await proc.metrics()
    timed = [e for e in entered if started <= e[2] <= end - 5]
    api = sum(after.get(k, 0) - before.get(k, 0) for k in API)
    span = end - started
    latencies, repeats = match(timed, hook.received, since=started)
    return {
        "ready_s": ready,
        "ready_sim_cpu_share": (sim_ready.cpu - sim0.cpu) / ready,
        "bare_snapshot_s": bare,
        "transitions": len(timed),
        "detected": len(latencies),
        "repeats": repeats,
        "api_requests": api,
        "api_per_transition": api / max(len(timed), 1),
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "latency_max": max(latencies, default=float("nan")),
        "daemon_cpu_share": (cpu1.cpu - cpu0.cpu) / span,
        "sim_cpu_share": (sim2.cpu - sim1.cpu) / span,
        "daemon_peak_rss_mb": cpu1.peak_rss / 2**20,
        "covered": metrics.get("run_watcher_realtime_covered_runs", 0.0),
        "uncovered": metrics.get("run_watcher_realtime_uncovered_runs", 0.0),
        "connections": metrics.get("run_watcher_realtime_connections", 0.0),
    }


async def storm_once(runs: int = WATCHES, within: float = 10.0) -> dict[str, Any]:
    """``runs`` covered runs fail within ``within`` seconds."""
    async with simulator(_spec(runs, cap=None)) as sim, receivers(1) as (hook,):
        config = _config(sim, hook, runs, "feed")
        async with daemon(config, wait_ready=False) as proc:
            await proc.wait_ready(300)
            await anyio.sleep(3)
            before = (await sim.stats())["requests"]
            sim0, cpu0 = proc_stats(sim.process.pid), proc.stats()
            failed: dict[str, float] = {}
            started = time.monotonic()

            async def fail(worker: int, workers: int) -> None:
                for i in range(worker, runs, workers):
                    await anyio.sleep_until(started + within * i / runs)
                    failed[f"trb_{i}"] = time.monotonic()
                    body = {"status": "FAILED", "error": f"deploy broke trb_{i}"}
                    await sim.control(f"trigger/runs/trb_{i}", body)

            async with anyio.create_task_group() as tg:
                for worker in range(20):
                    tg.start_soon(fail, worker, 20)
            sent = time.monotonic() - started
            with anyio.move_on_after(60):
                read = events = 0  # each message parsed once: the receiver keeps its pace
                while events < runs:
                    for message in hook.received[read:]:
                        events += len(message.events)
                    read = len(hook.received)
                    await anyio.sleep(0.1)
            span = time.monotonic() - started
            after = (await sim.stats())["requests"]
            sim1, cpu1 = proc_stats(sim.process.pid), proc.stats()
    latencies, notified = [], set()
    for message in hook.received:
        for event in message.events:
            if event["to_status"] == "FAILED" and event["subject_id"] in failed:
                notified.add(event["subject_id"])
                latencies.append(message.at - failed[event["subject_id"]])
    return {
        "runs": runs,
        "failures_sent_s": sent,
        "notified": len(notified),
        "events": len(latencies),
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "latency_max": max(latencies, default=float("nan")),
        "api_requests": sum(after.get(k, 0) - before.get(k, 0) for k in API),
        "daemon_cpu_share": (cpu1.cpu - cpu0.cpu) / span,
        "sim_cpu_share": (sim1.cpu - sim0.cpu) / span,
    }


async def start_once(runs: int) -> dict[str, Any]:
    """Spawn to ``/readyz`` with ``runs`` watches on the feed, the budget as it is."""
    async with simulator(_spec(runs, cap=None)) as sim, receivers(1) as (hook,):
        bare = await bare_snapshot(sim)
        config = _config(sim, hook, runs, "feed")
        sim0 = proc_stats(sim.process.pid)
        spawned = time.monotonic()
        async with daemon(config, wait_ready=False) as proc:
            await proc.wait_ready(900)
            ready = time.monotonic() - spawned
            sim1 = proc_stats(sim.process.pid)
            served = (await sim.stats())["requests"]
            api = sum(served.get(k, 0) for k in API)
            peak = proc.stats().peak_rss
    return {
        "watches": runs,
        "ready_s": ready,
        "bare_snapshot_s": bare,
        "api_requests_to_ready": api,
        "sim_cpu_share": (sim1.cpu - sim0.cpu) / ready,
        "daemon_peak_rss_mb": peak / 2**20,
    }


async def bench(runs: int, steady: float) -> dict[str, Any]:
    """The three modes alternating ``runs`` times, then the storm and the 20,000 start."""
    results: dict[str, list[dict[str, Any]]] = {"poll": [], "feed": [], "feed_capped": []}
    for seed in range(runs):
        for mode in results:
            result = await steady_once(mode, steady, seed)
            print(mode, json.dumps(result), file=sys.stderr, flush=True)  # kept if a later fails
            results[mode].append(result)
    out: dict[str, Any] = {
        mode: {k: median([r[k] for r in rs]) for k in rs[0]} for mode, rs in results.items()
    }
    poll = out["poll"]["api_per_transition"] or 1.0
    for mode in ("feed", "feed_capped"):
        out[mode]["api_vs_poll"] = out[mode]["api_per_transition"] / poll
    out["storm"] = await storm_once()
    print("storm", json.dumps(out["storm"]), file=sys.stderr, flush=True)
    out["start_20000"] = await start_once(20_000)
    out["per_run"] = results
    out["steady"] = steady
    return out


def main() -> None:
    """``python -m bench.realtime [runs] [steady seconds]``: print the figures as JSON."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    steady = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    print(json.dumps(anyio.run(bench, runs, steady), indent=2, default=str))


if __name__ == "__main__":
    main()
