"""Within the provider's budget: 2,000 ``trigger_run`` watches under Trigger.dev's limiter.

The simulator enforces the documented limiter (250 tokens every 10 s, burst 750,
``x-ratelimit-*`` headers, problem+json 429). The daemon runs with its default
Trigger.dev budget and polling policy. Twenty runs keep changing; the rest last
changed an hour ago. The first pass is paced by the budget; after it, the idle
runs back off and the changing ones are polled at their pace.
Measured: 429s (target: none), requests per minute, how soon the changing runs'
transitions arrive, and whether the log says that the budget set the pace.
"""

from __future__ import annotations

import random
import time
from typing import Any

import anyio

from bench.common import (
    Simulator,
    daemon,
    log_lines,
    median,
    percentile,
    receivers,
    simulator,
    watcher_config,
)
from bench.latency import ROUTES, notifier_for

WATCHES = 2000
CHANGING = 20
_CYCLE = ["EXECUTING", "WAITING"]


async def churn(
    sim: Simulator, run_id: str, rng: random.Random, entered: list[tuple[str, str, float]]
) -> None:
    """Move ``run_id`` between EXECUTING and WAITING every 8-12 s, recording each entry."""
    step = 0
    await anyio.sleep(rng.uniform(0, 5))
    while True:
        step += 1
        status = _CYCLE[step % 2]
        entered.append((run_id, status, time.monotonic()))
        await sim.control(f"trigger/runs/{run_id}", {"status": status})
        await anyio.sleep(rng.uniform(8, 12))


async def run_once(steady: float, seed: int) -> dict[str, Any]:
    """One run: the first pass, then ``steady`` seconds; changes are timed after READY."""
    rng = random.Random(seed)
    # The idle runs last changed an hour ago, the changing ones keep changing.
    spec = {"trigger_runs": [["trb_", WATCHES, "EXECUTING", 3600]], "limiter": True}
    watches = [{"type": "trigger_run", "id": f"trb_{i}"} for i in range(WATCHES)]
    changing = [f"trb_{i}" for i in rng.sample(range(WATCHES), CHANGING)]
    entered: list[tuple[str, str, float]] = []
    async with simulator(spec) as sim, receivers(1) as (hook,):
        config = watcher_config(sim.url, [notifier_for(hook)], watches, routes=ROUTES)
        # Poll mode: the budget's own pace (bench/realtime.py measures the feed).
        config["sources"]["trigger"]["realtime"] = False
        async with daemon(config, wait_ready=False) as proc:
            start = time.monotonic()

            async with anyio.create_task_group() as tg:
                for run_id in changing:
                    tg.start_soon(churn, sim, run_id, rng, entered)
                await proc.wait_ready(600)
                ready_at = time.monotonic()
                await anyio.sleep(steady)
                tg.cancel_scope.cancel()
            await anyio.sleep(3)
            end = time.monotonic()
            stats = await sim.stats()
            lines = log_lines(proc)
    requests = stats["requests"].get("trigger.run", 0)
    timed = [e for e in entered if ready_at <= e[2] <= end - 3]
    latencies = _latencies(timed, hook.received)
    return {
        "rate_limited": stats["rate_limited"],
        "requests": requests,
        "requests_per_minute": requests / (end - start) * 60,
        "first_pass_s": ready_at - start,
        "transitions": len(timed),
        "detected": len(latencies),
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "budget_logged": any("budget sets the pace" in str(line.get("event")) for line in lines),
    }


def _latencies(entered: list[tuple[str, str, float]], received: list[Any]) -> list[float]:
    """Each notification against the latest entry into its status before it arrived."""
    history: dict[tuple[str, str], list[float]] = {}
    for run, status, t in entered:
        history.setdefault((run, status), []).append(t)
    used: set[tuple[str, str, float]] = set()
    out = []
    for message in received:
        for event in message.events:
            key = (event["subject_id"], event["to_status"])
            if event["kind"] != "run.status_changed":
                continue
            before = [t for t in history.get(key, []) if t <= message.at]
            if before and (*key, before[-1]) not in used:
                used.add((*key, before[-1]))
                out.append(message.at - before[-1])
    return out


async def bench(runs: int, steady: float) -> dict[str, Any]:
    """Median of ``runs`` runs; 429s summed (the target is zero in every run)."""
    results = [await run_once(steady, seed) for seed in range(runs)]
    out: dict[str, Any] = {
        k: median([r[k] for r in results]) for k in results[0] if k != "budget_logged"
    }
    out["rate_limited_total"] = sum(r["rate_limited"] for r in results)
    out["budget_logged"] = all(r["budget_logged"] for r in results)
    out["per_run"] = results
    out["steady"] = steady
    return out
