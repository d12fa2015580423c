"""Group events: stream mode against poll mode, side by side on the same groups.

Two daemons watch the same four active task groups, one in ``mode: stream``,
one in ``mode: poll`` (``min_interval`` 1 s, ``max_interval`` 30 s for both),
each with its own receiver. Runs keep completing in every group and some fail
at random; each failure is timed from the control request to each daemon's
notification. Requests are each daemon's own upstream requests from the
moment it is ready (stream connections and cross-check polls included), per
group, and scaled to an hour (which overstates the stream's: its connection
is made once, not once per window).
"""

from __future__ import annotations

import random
import time
from typing import Any

import anyio

from bench.common import daemon, median, percentile, receivers, simulator, watcher_config
from bench.latency import ROUTES, fail_group_runs, keep_groups_busy, notifier_for

GROUPS = 4
RUNS_PER_GROUP = 400


def _requests(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("run_watcher_upstream_requests_total"))


async def run_once(duration: float, seed: int) -> dict[str, Any]:
    """One side-by-side run of ``duration`` seconds."""
    rng = random.Random(seed)
    spec = {"groups": [["tgrp_st", GROUPS, RUNS_PER_GROUP, "running"]]}
    failed_at: dict[str, float] = {}
    async with simulator(spec) as sim, receivers(2) as (stream_hook, poll_hook):

        def config(mode: str, hook: Any) -> dict[str, Any]:
            return watcher_config(
                sim.url,
                [notifier_for(hook)],
                [
                    {"type": "parallel_task_group", "id": f"tgrp_st{i}", "mode": mode}
                    for i in range(GROUPS)
                ],
                routes=ROUTES,
                polling={"min_interval": "1s", "max_interval": "30s"},
            )

        async with (
            daemon(config("stream", stream_hook)) as streamed,
            daemon(config("poll", poll_hook)) as polled,
        ):
            base = {
                "stream": _requests(await streamed.metrics()),
                "poll": _requests(await polled.metrics()),
            }
            start = time.monotonic()
            end = start + duration

            async with anyio.create_task_group() as tg:
                tg.start_soon(keep_groups_busy, sim, "tgrp_st", GROUPS, end)
                tg.start_soon(fail_group_runs, sim, rng, "tgrp_st", GROUPS, end - 2, failed_at)
            await anyio.sleep(2)
            elapsed = time.monotonic() - start
            spent = {
                "stream": _requests(await streamed.metrics()) - base["stream"],
                "poll": _requests(await polled.metrics()) - base["poll"],
            }
    out: dict[str, Any] = {}
    for mode, hook in (("stream", stream_hook), ("poll", poll_hook)):
        latencies = [
            message.at - failed_at[event["subject_id"]]
            for message in hook.received
            for event in message.events
            if event["kind"] == "group.runs_failed" and event["subject_id"] in failed_at
        ]
        out[f"{mode}_samples"] = latencies
        out[f"{mode}_p50"] = percentile(latencies, 50)
        out[f"{mode}_p99"] = percentile(latencies, 99)
        out[f"{mode}_missed"] = len(failed_at) - len(latencies)
        out[f"{mode}_requests_per_group"] = spent[mode] / GROUPS
        out[f"{mode}_requests_per_hour"] = spent[mode] / GROUPS / elapsed * 3600
    out["seconds"] = elapsed
    return out


async def bench(runs: int, duration: float) -> dict[str, Any]:
    """Medians of ``runs`` side-by-side runs."""
    results = [await run_once(duration, seed) for seed in range(runs)]
    out: dict[str, Any] = {
        k: median([r[k] for r in results]) for k in results[0] if not k.endswith("_samples")
    }
    out["stream_samples"] = [x for r in results for x in r["stream_samples"]]
    out["poll_samples"] = [x for r in results for x in r["poll_samples"]]
    out["per_run"] = [{k: v for k, v in r.items() if not k.endswith("_samples")} for r in results]
    return out
