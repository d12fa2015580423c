"""The daemon's own ceiling: Parallel run watches polled flat out against nginx.

Parallel's status reads are not rate-limited, so at scale the daemon's CPU is the
limit. nginx (``bench/nginx.py``, one worker pinned to CPU 1) serves the runs from
files, so the server is never the bottleneck: its CPU share is reported beside every
figure. The daemon runs pinned to CPU 0 with ``min_interval = max_interval`` and the
budget lifted, so every watch is always due and the poll rate is the throughput. In
the same run, alternating with the daemon's windows (the daemon is stopped with
SIGSTOP meanwhile), bare loops over the same paths with the daemon's layout (one
client of ``CONCURRENCY`` connections, on CPU 0): httpx on httpcore, httpx on
aiohttp's transport, and aiohttp itself.

Also per size: resident memory (two watches, then each size), time from start to
ready (every watch polled once), event-loop lag. And what the savings buy: the
detection latency of a Parallel run that fails after an hour of quiet, with the
default ceiling of an idle Parallel watch (``sources.parallel.max_interval``, 30 s).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.budget import _latencies
from bench.common import (
    ROOT,
    daemon,
    json_notifier,
    median,
    percentile,
    receivers,
    simulator,
    watcher_config,
)
from bench.latency import ROUTES, notifier_for
from bench.nginx import FakeServer, nginx, parallel_paths
from bench.scale import _window

CONCURRENCY = 8
"""The Parallel source's connections (``sources.parallel.max_concurrency``)."""
CLIENTS = ("httpx", "httpx-aiohttp", "aiohttp")
PREFIX = "prc_"


def _config(url: str, hook: Any, total: int, interval: str) -> dict[str, Any]:
    source = {"requests_per_minute": 60_000_000, "burst": 1_000_000, "reserve": 0}
    watches = [{"type": "parallel_task_run", "id": f"{PREFIX}{i}"} for i in range(total)]
    return watcher_config(
        url,
        [json_notifier(hook)],
        watches,
        polling={"min_interval": interval, "max_interval": interval, "jitter": 0.1},
        sources={"parallel": {"base_url": url, "max_concurrency": CONCURRENCY, **source}},
    )


RUNTIME_VENV = ROOT / ".venv-run"
"""The daemon under test runs from the runtime lock alone, as a production install does:
the bench's own venv holds the test dependencies, and httpcore imports trio when it is
installed (8 MB of resident memory the daemon would not have)."""


def runtime_venv() -> Path:
    """``.venv-run``: the runtime lock and the project, created once."""
    binary = RUNTIME_VENV / "bin" / "run-watcher"
    if not binary.exists():
        pip = [str(RUNTIME_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([sys.executable, "-m", "venv", str(RUNTIME_VENV)], check=True)
        subprocess.run(
            [*pip, "--require-hashes", "-r", str(ROOT / "requirements" / "runtime.txt")],
            check=True,
        )
        subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    return binary


def _pinned() -> list[str]:
    return ["taskset", "-c", "0", str(runtime_venv())]


def bare(server: FakeServer, total: int, client: str, seconds: float) -> dict[str, float]:
    """One bare loop on CPU 0 over the daemon's paths; the server's CPU share beside it."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(parallel_paths(PREFIX, total)))
    before = server.stats()
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-m",
            "bench.bare",
            "--url",
            server.url,
            "--paths",
            f.name,
            "--concurrency",
            str(CONCURRENCY),
            "--seconds",
            str(seconds),
            "--client",
            client,
        ],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=seconds + 60,
    )
    after = server.stats()
    result = json.loads(out.stdout)
    return {
        "requests_per_second": result["requests"] / result["seconds"],
        "cpu_us_per_request": result["cpu"] / result["requests"] * 1e6,
        "server_cpu_share": (after.cpu - before.cpu) / result["seconds"],
    }


async def _rss_of_two(url: str) -> float:
    """Resident memory of a daemon with two watches, settled."""
    async with receivers(1) as (hook,), daemon(_config(url, hook, 2, "2s"), argv=_pinned()) as p:
        await anyio.sleep(3)
        return p.stats().rss / 2**20


async def one_size(server: FakeServer, total: int, runs: int, window: float) -> dict[str, Any]:
    """``runs`` rounds at ``total`` watches: a daemon window, then each bare loop."""
    per_run: list[dict[str, Any]] = []
    async with (
        receivers(1) as (hook,),
        daemon(_config(server.url, hook, total, "1s"), wait_ready=False, argv=_pinned()) as proc,
    ):
        started = time.monotonic()
        await proc.wait_ready(600)
        ready_s = time.monotonic() - started
        for _ in range(runs):
            await anyio.sleep(1)
            before = server.stats()
            ours = await _window(proc, window)
            ours["server_cpu_share"] = (server.stats().cpu - before.cpu) / window
            row: dict[str, Any] = dict(ours)
            proc.process.send_signal(signal.SIGSTOP)
            try:
                for client in CLIENTS:
                    base = await anyio.to_thread.run_sync(bare, server, total, client, window)
                    for key, value in base.items():
                        row[f"{client}_{key}"] = value
                    row[f"vs_{client}"] = ours["polls_per_second"] / base["requests_per_second"]
            finally:
                proc.process.send_signal(signal.SIGCONT)
            per_run.append(row)
    out: dict[str, Any] = {k: median([r[k] for r in per_run]) for k in per_run[0]}
    out["per_run"] = per_run
    out["watches"] = total
    out["ready_s"] = ready_s
    return out


async def idle_latency(runs: int = 100, spread: float = 60.0, seed: int = 0) -> dict[str, Any]:
    """The worst case the Parallel ceiling sets: ``runs`` runs quiet for an hour, each
    failing at a random moment within ``spread`` seconds, with the default intervals
    (against the Python simulator: it changes runs; nginx cannot)."""
    rng = random.Random(seed)
    spec = {"parallel_runs": [["pidle_", runs, "running", 3600]], "limiter": False}
    watches = [{"type": "parallel_task_run", "id": f"pidle_{i}"} for i in range(runs)]
    entered: list[tuple[str, str, float]] = []

    async def fail(sim: Any, run_id: str) -> None:
        await anyio.sleep(rng.uniform(0, spread))
        entered.append((run_id, "failed", time.monotonic()))
        await sim.control(f"parallel/runs/{run_id}", {"status": "failed", "error": "boom"})

    async with simulator(spec) as sim, receivers(1) as (hook,):
        config = watcher_config(sim.url, [notifier_for(hook)], watches, routes=ROUTES)
        async with daemon(config):
            await anyio.sleep(5)  # quiet for an hour: each watch idles at its ceiling
            async with anyio.create_task_group() as tg:
                for i in range(runs):
                    tg.start_soon(fail, sim, f"pidle_{i}")
            with anyio.move_on_after(60):
                while sum(len(m.events) for m in hook.received) < runs:  # noqa: ASYNC110
                    await anyio.sleep(0.2)
    latencies = _latencies(entered, hook.received)
    return {
        "runs": runs,
        "detected": len(latencies),
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
        "latency_max": max(latencies, default=float("nan")),
    }


async def bench(runs: int, sizes: tuple[int, ...] = (10_000,), window: float = 6) -> dict[str, Any]:
    """Every size in ``sizes`` against one nginx; the two-watch baseline first; then the
    idle detection latency against the simulator."""
    with nginx(PREFIX, max(sizes)) as server:
        out: dict[str, Any] = {"rss_2_watches_mb": await _rss_of_two(server.url)}
        for total in sizes:
            out[str(total)] = await one_size(server, total, runs, window)
            # Kept on stderr as it comes: a later size may fail.
            print(total, json.dumps(out[str(total)], default=str), file=sys.stderr, flush=True)
    out["idle"] = await idle_latency()
    return out


def main() -> None:
    """``python -m bench.ceiling [runs] [size ...]``: print the figures as JSON."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    sizes = tuple(int(a) for a in sys.argv[2:]) or (10_000,)
    print(json.dumps(anyio.run(bench, runs, sizes), indent=1, default=str))


if __name__ == "__main__":
    main()
