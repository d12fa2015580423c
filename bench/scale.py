"""Scale: 10,000 watches of mixed types in one process, polling flat out.

``min_interval = max_interval`` and a budget larger than the server can serve
keep every watch due all the time, so the poll rate is the throughput. The same
paths are then requested by a bare httpx loop (``bench/bare.py``) with the same
number of connections in the daemon's layout (one client of 8 per upstream),
against the same server, in the same run, the two alternating. Memory is read from ``/proc`` of the daemon; the loop lag from its
``run_watcher_event_loop_lag_seconds`` histogram over the measured window.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import anyio

from bench.common import (
    ROOT,
    daemon,
    histogram_quantile,
    json_notifier,
    median,
    receivers,
    simulator,
    watcher_config,
)

CONCURRENCY = 8  # per source: both sources together use 2 x 8 connections


def mix(total: int) -> dict[str, int]:
    """Half Trigger.dev runs, 40% Parallel runs, 10% Parallel groups."""
    return {"trigger": total // 2, "parallel": total * 4 // 10, "groups": total // 10}


def _spec(total: int) -> dict[str, Any]:
    m = mix(total)
    return {
        "trigger_runs": [["trs_", m["trigger"], "EXECUTING"]],
        "parallel_runs": [["prs_", m["parallel"], "running"]],
        "groups": [["tgrp_s", m["groups"], 3, "running"]],
        "limiter": False,
    }


def _watches(total: int) -> list[dict[str, Any]]:
    m = mix(total)
    return (
        [{"type": "trigger_run", "id": f"trs_{i}"} for i in range(m["trigger"])]
        + [{"type": "parallel_task_run", "id": f"prs_{i}"} for i in range(m["parallel"])]
        + [{"type": "parallel_task_group", "id": f"tgrp_s{i}"} for i in range(m["groups"])]
    )


def _paths(total: int) -> list[str]:
    m = mix(total)
    # Interleaved as the watcher's two schedulers interleave them.
    trigger = [f"/api/v3/runs/trs_{i}" for i in range(m["trigger"])]
    parallel = [f"/v1/tasks/runs/prs_{i}" for i in range(m["parallel"])] + [
        f"/v1/tasks/groups/tgrp_s{i}" for i in range(m["groups"])
    ]
    out: list[str] = []
    for a, b in zip(trigger, parallel, strict=False):
        out += [a, b]
    return out


def _config(sim_url: str, hook: Any, total: int, interval: str) -> dict[str, Any]:
    source = {"requests_per_minute": 6_000_000, "burst": 100_000, "reserve": 0}
    return watcher_config(
        sim_url,
        [json_notifier(hook)],
        _watches(total),
        polling={"min_interval": interval, "max_interval": interval, "jitter": 0.1},
        sources={
            "parallel": {"base_url": sim_url, "max_concurrency": CONCURRENCY, **source},
            "trigger": {"base_url": sim_url, "max_concurrency": CONCURRENCY, **source},
        },
    )


def _polls(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("run_watcher_polls_total"))


def _lag_buckets(samples: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.startswith("run_watcher_event_loop_lag")}


async def _window(proc: Any, seconds: float) -> dict[str, float]:
    before, stats0, t0 = await proc.metrics(), proc.stats(), time.monotonic()
    await anyio.sleep(seconds)
    after, stats1, t1 = await proc.metrics(), proc.stats(), time.monotonic()
    polls = _polls(after) - _polls(before)
    lag0, lag1 = _lag_buckets(before), _lag_buckets(after)
    lag = {k: lag1[k] - lag0.get(k, 0.0) for k in lag1}
    cpu = stats1.cpu - stats0.cpu
    return {
        "polls_per_second": polls / (t1 - t0),
        "cpu_share": cpu / (t1 - t0),
        "polls_per_cpu_second": polls / cpu if cpu else float("nan"),
        "cpu_us_per_poll": cpu / polls * 1e6 if polls else float("nan"),
        "rss_mb": stats1.rss / 2**20,
        "peak_rss_mb": stats1.peak_rss / 2**20,
        "loop_lag_p99_s": histogram_quantile(lag, "run_watcher_event_loop_lag_seconds", 0.99),
        "loop_lag_p50_s": histogram_quantile(lag, "run_watcher_event_loop_lag_seconds", 0.5),
    }


async def _baseline_rss(sim_url: str) -> float:
    """Resident memory of a daemon with two watches: what 10,000 watches add is on top."""
    async with receivers(1) as (hook,), daemon(_config(sim_url, hook, 2, "2s")) as proc:
        await anyio.sleep(2)
        return proc.stats().rss / 2**20


def measure_bare(sim_url: str, total: int, seconds: float) -> dict[str, float]:
    """The bare httpx loop over the same paths, with the same connections."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(_paths(total)))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bare",
            "--url",
            sim_url,
            "--paths",
            f.name,
            "--concurrency",
            str(2 * CONCURRENCY),
            "--clients",
            "2",  # the daemon's layout: one client of CONCURRENCY per upstream
            "--seconds",
            str(seconds),
        ],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=seconds + 60,
    )
    result = json.loads(out.stdout)
    return {
        "requests_per_second": result["requests"] / result["seconds"],
        "cpu_us_per_request": result["cpu"] / result["requests"] * 1e6,
    }


async def bench(runs: int, total: int, window: float) -> dict[str, Any]:
    """One daemon over ``total`` watches; ``runs`` rounds of daemon window, then bare loop.

    While the bare loop runs, the daemon is stopped (SIGSTOP), so the two never
    share the server; it resumes (SIGCONT) for its next window.
    """
    per_run: list[dict[str, Any]] = []
    async with simulator(_spec(total)) as sim:
        baseline = await _baseline_rss(sim.url)
        async with (
            receivers(1) as (hook,),
            daemon(_config(sim.url, hook, total, "1s"), wait_ready=False) as proc,
        ):
            started = time.monotonic()
            await proc.wait_ready(300)
            first_pass = time.monotonic() - started
            for _ in range(runs):
                await anyio.sleep(1)
                ours = await _window(proc, window)
                proc.process.send_signal(signal.SIGSTOP)
                try:
                    bare = await anyio.to_thread.run_sync(measure_bare, sim.url, total, window)
                finally:
                    proc.process.send_signal(signal.SIGCONT)
                per_run.append(
                    {
                        **ours,
                        **{f"bare_{k}": v for k, v in bare.items()},
                        "ratio": ours["polls_per_second"] / bare["requests_per_second"],
                    }
                )
    out: dict[str, Any] = {k: median([r[k] for r in per_run]) for k in per_run[0]}
    out["per_run"] = per_run
    out["watches"] = total
    out["first_pass_s"] = first_pass
    out["baseline_rss_mb"] = baseline
    out["kb_per_watch"] = (out["rss_mb"] - baseline) * 1024 / total
    return out
