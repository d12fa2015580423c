"""Detection latency: an upstream change in the simulator -> the webhook receiver.

"Active" means what the adaptive policy means by it: the subject keeps
changing, so its watch polls at ``min_interval``. Four task groups whose runs
keep completing are active; a run failing in them is timed from the control
request that failed it to the arrival of its ``group.runs_failed``
notification. Eight Trigger.dev runs step through statuses every 0.3-0.9 s and
each notified status is timed from when the run entered it; statuses a run
left before the next poll are counted as coalesced (polling cannot see them).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import anyio

from bench.common import (
    Simulator,
    daemon,
    json_notifier,
    percentile,
    receivers,
    simulator,
    watcher_config,
)

MIN_INTERVAL = 1.0
GROUPS = 4
RUNS_PER_GROUP = 400
TRIGGER_RUNS = 8
_CYCLE = ["DEQUEUED", "EXECUTING", "WAITING", "EXECUTING", "REATTEMPTING", "EXECUTING"]


@dataclass
class LatencyRun:
    """One run of the benchmark."""

    group_failures: list[float]
    run_changes: list[float]
    coalesced: int
    missed: int

    @property
    def all(self) -> list[float]:
        """Every latency measured, seconds."""
        return self.group_failures + self.run_changes


def notifier_for(hook: Any) -> dict[str, Any]:
    """A JSON notifier for the timed kinds only, with no rate limit in the way."""
    return json_notifier(hook, tags=["timed"], max_per_minute=60_000, burst=1000)


async def keep_groups_busy(sim: Simulator, prefix: str, groups: int, until: float) -> None:
    """Complete a run in each group every 0.25 s until ``until``: the groups stay active."""
    while time.monotonic() < until:
        for i in range(groups):
            await sim.control(
                f"parallel/groups/{prefix}{i}/progress", {"count": 1, "status": "completed"}
            )
        await anyio.sleep(0.25)


async def fail_group_runs(
    sim: Simulator,
    rng: random.Random,
    prefix: str,
    groups: int,
    until: float,
    failed_at: dict[str, float],
) -> None:
    """Fail a run of a random group every 0.2-0.6 s; ``failed_at``: run id -> when."""
    while time.monotonic() < until:
        await anyio.sleep(rng.uniform(0.2, 0.6))
        t = time.monotonic()
        changed = await sim.control(
            f"parallel/groups/{prefix}{rng.randrange(groups)}/progress",
            {"count": 1, "status": "failed", "error": "bench failure"},
        )
        for run_id in changed["runs"]:
            failed_at[run_id] = t


ROUTES = [
    {
        "match": {"kind": ["group.runs_failed", "run.status_changed", "run.retrying"]},
        "notify": ["timed"],
    }
]


async def run_once(duration: float, seed: int, *, mode: str | None = None) -> LatencyRun:
    """Run the scenario for ``duration`` seconds; ``mode`` sets the group watches' mode."""
    rng = random.Random(seed)
    spec = {
        "groups": [["tgrp_lat", GROUPS, RUNS_PER_GROUP, "running"]],
        "trigger_runs": [["run_lat", TRIGGER_RUNS, "QUEUED"]],
    }
    group_watch: dict[str, Any] = {"type": "parallel_task_group"}
    if mode is not None:
        group_watch["mode"] = mode
    watches = [{**group_watch, "id": f"tgrp_lat{i}"} for i in range(GROUPS)] + [
        {"type": "trigger_run", "id": f"run_lat{i}"} for i in range(TRIGGER_RUNS)
    ]
    failed_at: dict[str, float] = {}
    entered: dict[str, list[tuple[str, float]]] = {f"run_lat{i}": [] for i in range(TRIGGER_RUNS)}
    async with simulator(spec) as sim, receivers(1) as (hook,):
        config = watcher_config(
            sim.url,
            [notifier_for(hook)],
            watches,
            routes=ROUTES,
            polling={"min_interval": f"{MIN_INTERVAL}s", "max_interval": "30s"},
            sources={
                "parallel": {"base_url": sim.url, "requests_per_minute": 6000, "burst": 200},
                "trigger": {"base_url": sim.url},
            },
        )
        async with daemon(config):
            end = time.monotonic() + duration

            async def step_run(run_id: str) -> None:
                step = 0
                while time.monotonic() < end - 3:
                    await anyio.sleep(rng.uniform(0.3, 0.9))
                    status = _CYCLE[step % len(_CYCLE)]
                    step += 1
                    entered[run_id].append((status, time.monotonic()))
                    await sim.control(f"trigger/runs/{run_id}", {"status": status})

            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_groups_busy, sim, "tgrp_lat", GROUPS, end)
                tg.start_soon(fail_group_runs, sim, rng, "tgrp_lat", GROUPS, end - 3, failed_at)
                for run_id in entered:
                    tg.start_soon(step_run, run_id)
            await anyio.sleep(MIN_INTERVAL + 2)
        return _measure(hook.received, failed_at, entered)


def _measure(
    received: list[Any],
    failed_at: dict[str, float],
    entered: dict[str, list[tuple[str, float]]],
) -> LatencyRun:
    group: list[float] = []
    runs: list[float] = []
    notified: set[tuple[str, int]] = set()
    for message in received:
        for event in message.events:
            subject = event["subject_id"]
            if event["kind"] == "group.runs_failed" and subject in failed_at:
                group.append(message.at - failed_at.pop(subject))
            elif event["kind"] in ("run.status_changed", "run.retrying") and subject in entered:
                history = entered[subject]
                # The latest entry into this status before the notification arrived.
                for index in range(len(history) - 1, -1, -1):
                    status, at = history[index]
                    if status == event["to_status"] and at <= message.at:
                        if (subject, index) not in notified:
                            notified.add((subject, index))
                            runs.append(message.at - at)
                        break
    # REATTEMPTING reads EXECUTING under the current API version: invisible to any
    # poller; the retry is told (run.retrying) when the next attempt starts.
    changes = sum(1 for h in entered.values() for status, _ in h if status != "REATTEMPTING")
    return LatencyRun(group, runs, coalesced=changes - len(notified), missed=len(failed_at))


def summarize(runs: list[LatencyRun]) -> dict[str, Any]:
    """Per-run percentiles and their medians."""
    from bench.common import median

    def stats(values: list[float]) -> dict[str, float]:
        return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": len(values)}

    per_run = [
        {"groups": stats(r.group_failures), "runs": stats(r.run_changes), "all": stats(r.all)}
        for r in runs
    ]
    out: dict[str, Any] = {"per_run": per_run}
    for part in ("groups", "runs", "all"):
        out[part] = {key: median([p[part][key] for p in per_run]) for key in ("p50", "p99", "n")}
    out["coalesced"] = median([r.coalesced for r in runs])
    out["missed"] = max(r.missed for r in runs)
    out["samples"] = [x for r in runs for x in r.all]
    out["target_p99"] = MIN_INTERVAL + 0.25
    return out


async def bench(runs: int, duration: float) -> dict[str, Any]:
    """Median of ``runs`` runs of ``duration`` seconds."""
    # Polling's latency: the groups' event streams (bench/stream.py) are measured apart.
    results = [await run_once(duration, seed, mode="poll") for seed in range(runs)]
    return summarize(results)
