"""Storm: 10,000 runs of one task group fail within ten seconds; three notifiers.

The daemon runs with the default notification settings (grouping, storm
control, each notifier's rate limit). Measured: the time from the first
failure until each notifier has been told about every failed run (in digests),
the messages each notifier got, and the daemon's peak resident memory.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from bench.common import daemon, json_notifier, median, receivers, simulator, watcher_config

RUNS = 10_000
WAVES = 20


async def run_once(runs: int = RUNS) -> dict[str, Any]:
    """Fail ``runs`` runs in ``WAVES`` waves over ten seconds; wait for every digest."""
    spec = {"groups": [["tgrp_storm", 1, runs, "running"]], "limiter": False}
    watches = [{"type": "parallel_task_group", "id": "tgrp_storm0"}]
    async with simulator(spec) as sim, receivers(3) as hooks:
        config = watcher_config(
            sim.url,
            [json_notifier(hook, name=f"notifier-{i}") for i, hook in enumerate(hooks)],
            watches,
            notifications={},  # the defaults: grouping and storm control as shipped
        )
        config.pop("notifications")
        async with daemon(config) as proc:
            rss_before = proc.stats().rss
            start = time.monotonic()
            for _ in range(WAVES):
                await sim.control(
                    "parallel/groups/tgrp_storm0/progress",
                    {"count": runs // WAVES, "status": "failed", "error": "storm"},
                )
                await anyio.sleep(10 / WAVES)
            done_at: list[float] = []
            with anyio.fail_after(300):
                for hook in hooks:
                    await hook.wait_until(lambda received: _failed(received) >= runs)
                    done_at.append(max(r.at for r in hook.received) - start)
            await anyio.sleep(1)
            stats = proc.stats()
    return {
        "all_notified_s": max(done_at),
        "messages_per_notifier": median([len(hook.received) for hook in hooks]),
        "max_message_kb": max(len(r.body) for hook in hooks for r in hook.received) / 1024,
        "peak_rss_mb": stats.peak_rss / 2**20,
        "rss_growth_mb": (stats.rss - rss_before) / 2**20,
    }


def _failed(received: list[Any]) -> int:
    runs: set[str] = set()
    for message in received:
        for event in message.events:
            if event["kind"] == "group.runs_failed":
                runs.add(event["subject_id"])
    return len(runs)


async def bench(runs: int) -> dict[str, Any]:
    """Median of ``runs`` storms."""
    results = [await run_once() for _ in range(runs)]
    out: dict[str, Any] = {k: median([r[k] for r in results]) for k in results[0]}
    out["per_run"] = results
    return out
