"""Trigger.dev realtime against poll mode, side by side: 2,000 ``trigger_run`` watches.

The same world and the same script in both modes: 2,000 runs, 20 of which change
every 8-12 s, the rest idle; the simulator enforces Trigger.dev's ``/api`` limiter and
serves the realtime shapes (capped at ``cap`` runs per multi-run shape, as the
provider's newer backend does: ``None`` lifts it). Measured after READY: detection
latency (p50/p99), ``/api`` requests per hour, the daemon's CPU share and peak RSS,
and the simulator's CPU share (it must not be the bottleneck). And one snapshot of a
large environment: ``snapshot_runs`` runs in the window, one watch: time from start to
the feed holding its run, and the daemon's peak RSS.
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import anyio
import httpx

from bench.budget import _latencies, churn
from bench.common import (
    daemon,
    median,
    percentile,
    proc_stats,
    receivers,
    simulator,
    watcher_config,
)
from bench.latency import ROUTES, notifier_for

WATCHES = 2000
CHANGING = 20


async def run_once(mode: str, steady: float, seed: int, cap: int | None) -> dict[str, Any]:
    """One run of ``mode`` (``auto``: the feed; ``poll``)."""
    rng = random.Random(seed)
    spec: dict[str, Any] = {
        "trigger_runs": [["trb_", WATCHES, "EXECUTING", 3600]],
        "limiter": True,
        "realtime": {"cap": cap if cap is not None else 10**9, "long_poll": 20.0},
    }
    watches = [{"type": "trigger_run", "id": f"trb_{i}", "mode": mode} for i in range(WATCHES)]
    changing = [f"trb_{i}" for i in rng.sample(range(WATCHES), CHANGING)]
    entered: list[tuple[str, str, float]] = []
    async with simulator(spec) as sim, receivers(1) as (hook,):
        config = watcher_config(sim.url, [notifier_for(hook)], watches, routes=ROUTES)
        async with daemon(config, wait_ready=False) as proc:
            # The changing runs change from the start (as in bench/budget.py): in poll mode
            # they are then polled at their active pace, not backed off to max_interval.
            async with anyio.create_task_group() as tg:
                for run_id in changing:
                    tg.start_soon(churn, sim, run_id, rng, entered)
                await proc.wait_ready(600)
                await anyio.sleep(5)  # settle: the feed (if any) holds what it can
                before = (await sim.stats())["requests"]
                cpu0, sim0 = proc.stats(), proc_stats(sim.process.pid)
                ready_at = time.monotonic()
                await anyio.sleep(steady)
                tg.cancel_scope.cancel()
            await anyio.sleep(3)
            end = time.monotonic()
            after = (await sim.stats())["requests"]
            cpu1, sim1 = proc.stats(), proc_stats(sim.process.pid)
            metrics = await proc.metrics()
    api = sum(after.get(k, 0) - before.get(k, 0) for k in ("trigger.run", "trigger.list"))
    span = end - ready_at
    timed = [e for e in entered if ready_at <= e[2] <= end - 3]
    latencies = _latencies(timed, hook.received)
    return {
        "api_requests_per_hour": api / span * 3600,
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "transitions": len(timed),
        "detected": len(latencies),
        "daemon_cpu_share": (cpu1.cpu - cpu0.cpu) / span,
        "sim_cpu_share": (sim1.cpu - sim0.cpu) / span,
        "daemon_peak_rss_mb": cpu1.peak_rss / 2**20,
        "covered": metrics.get("run_watcher_realtime_covered_runs", 0.0),
        "applied": metrics.get("run_watcher_realtime_applied_total", 0.0),
        "polled_changes": metrics.get("run_watcher_realtime_changes_total", 0.0),
    }


async def snapshot_once(runs: int) -> dict[str, Any]:
    """A feed whose window holds ``runs`` runs; one of them watched."""
    spec: dict[str, Any] = {"trigger_runs": [["snap_", runs, "EXECUTING"]], "limiter": False}
    spec["realtime"] = {"cap": 10**9, "long_poll": 20.0}
    async with simulator(spec) as sim, receivers(1) as (hook,):
        config = watcher_config(
            sim.url, [notifier_for(hook)], [{"type": "trigger_run", "id": "snap_0"}]
        )
        started = time.monotonic()
        async with daemon(config, wait_ready=False) as proc:
            with anyio.fail_after(300):
                while True:
                    try:
                        covered = (await proc.metrics()).get("run_watcher_realtime_covered_runs")
                    except httpx.TransportError:  # not listening yet
                        covered = None
                    if covered == 1.0:
                        break
                    await anyio.sleep(0.1)
            held_after = time.monotonic() - started
            peak = proc.stats().peak_rss
            sim_cpu = proc_stats(sim.process.pid).cpu
    return {
        "runs": runs,
        "covered_after_s": held_after,
        "daemon_peak_rss_mb": peak / 2**20,
        "sim_cpu_s": sim_cpu,
    }


async def bench(runs: int, steady: float, snapshot_runs: int = 100_000) -> dict[str, Any]:
    """Poll and realtime (capped and uncapped), alternating, ``runs`` each; one snapshot."""
    results: dict[str, list[dict[str, Any]]] = {"poll": [], "auto": [], "auto_capped": []}
    for seed in range(runs):
        for name, mode, cap in (
            ("poll", "poll", None),
            ("auto", "auto", None),
            ("auto_capped", "auto", 1000),
        ):
            result = await run_once(mode, steady, seed, cap)
            print(
                name, json.dumps(result), file=sys.stderr, flush=True
            )  # kept if a later part fails
            results[name].append(result)
    out: dict[str, Any] = {
        name: {k: median([r[k] for r in rs]) for k in rs[0]} for name, rs in results.items()
    }
    poll_api = out["poll"]["api_requests_per_hour"] or 1.0
    for name in ("auto", "auto_capped"):
        out[name]["api_vs_poll"] = out[name]["api_requests_per_hour"] / poll_api
    out["snapshot"] = await snapshot_once(snapshot_runs)
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
