"""What every benchmark shares: processes on loopback, their counters, and statistics.

The simulator and the daemon each run in a process of their own, so that CPU
time and resident memory are the daemon's alone and the controller (this
process, which also runs the webhook receiver) cannot slow either of them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from watcher.simulator.receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
PARALLEL_KEY = "sim-parallel-key"
TRIGGER_KEY = "tr_dev_simulator_key"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    """The median; NaN when empty."""
    return statistics.median(values) if values else float("nan")


# -- processes ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcStats:
    """One reading of a process: CPU seconds, resident and peak resident bytes."""

    cpu: float
    rss: int
    peak_rss: int


def proc_stats(pid: int) -> ProcStats:
    """Read ``/proc/<pid>``: user+system CPU, ``VmRSS`` and ``VmHWM``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {
        line.split(":")[0]: int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    }
    return ProcStats(cpu, kb["VmRSS"] * 1024, kb["VmHWM"] * 1024)


def stop(process: subprocess.Popen[bytes], sig: int, grace: float) -> None:
    """Send ``sig`` to a process still running, wait ``grace`` seconds, then kill it."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def wait_listening(port: int, within: float = 20.0) -> None:
    """Wait until something accepts connections on ``127.0.0.1:port``."""
    with anyio.fail_after(within):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return


@dataclass
class Simulator:
    """The simulator in its own process (``bench/simserver.py``), and a client for it."""

    port: int
    process: subprocess.Popen[bytes]
    client: httpx.AsyncClient

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """``POST /_sim/<path>`` (a change to the simulated world)."""
        response = await self.client.post(f"{self.url}/_sim/{path}", json=body or {})
        response.raise_for_status()
        return response.json()

    async def stats(self) -> dict[str, Any]:
        """Requests served by endpoint, and how many the Trigger.dev limiter refused."""
        response = await self.client.get(f"{self.url}/_sim/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


@asynccontextmanager
async def simulator(spec: dict[str, Any]) -> AsyncIterator[Simulator]:
    """Start ``bench/simserver.py`` with a world built from ``spec``; stop it on exit."""
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.simserver", "--port", str(port), "--spec", f.name],
        cwd=ROOT,
    )
    try:
        await wait_listening(port)
        async with httpx.AsyncClient(timeout=30) as client:
            yield Simulator(port, process, client)
    finally:
        process.terminate()
        process.wait(10)
        os.unlink(f.name)


@dataclass
class DaemonProcess:
    """``run-watcher run`` in its own process, with ``/metrics`` on loopback."""

    process: subprocess.Popen[bytes]
    metrics_port: int
    directory: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.process.pid

    def stats(self) -> ProcStats:
        """CPU and memory now."""
        return proc_stats(self.process.pid)

    async def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{'name{label="v",...}': value}`` (samples)."""
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    async def wait_ready(self, within: float = 60.0) -> None:
        """Wait until ``/readyz`` answers 200 (every watch polled once)."""
        async with httpx.AsyncClient(timeout=5) as client:
            with anyio.fail_after(within):
                while True:
                    try:
                        response = await client.get(f"http://127.0.0.1:{self.metrics_port}/readyz")
                        if response.status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.05)


def watcher_config(
    sim_url: str, notifiers: list[dict[str, Any]], watches: list[dict[str, Any]], **sections: Any
) -> dict[str, Any]:
    """A daemon config against the simulator; ``sections`` replace the defaults here."""
    config: dict[str, Any] = {
        "sources": {
            "parallel": {"base_url": sim_url},
            "trigger": {"base_url": sim_url},
        },
        "notifiers": notifiers,
        "notifications": {"group_wait": "0s", "group_interval": "0s"},
        "watches": watches,
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@asynccontextmanager
async def daemon(
    config: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    argv: Sequence[str] = (),
) -> AsyncIterator[DaemonProcess]:
    """Run the daemon on ``config`` (``http.listen`` is added); SIGTERM it on exit."""
    port = free_port()
    config = {**config, "http": {**config.get("http", {}), "listen": f"127.0.0.1:{port}"}}
    directory = Path(tempfile.mkdtemp(prefix="bench-watcher-"))
    path = directory / "watcher.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    environment = {
        **os.environ,
        "PARALLEL_API_KEY": PARALLEL_KEY,
        "TRIGGER_SECRET_KEY": TRIGGER_KEY,
        **(env or {}),
    }
    command = [
        *(argv or [str(ROOT / ".venv/bin/run-watcher")]),
        "run",
        "--config",
        str(path),
        "--log-format",
        "json",
        "--log-level",
        "warning",
    ]
    log = (directory / "daemon.log").open("wb")
    process = subprocess.Popen(command, env=environment, stderr=log, stdout=log, cwd=ROOT)
    proc = DaemonProcess(process, port, directory)
    try:
        if wait_ready:
            await proc.wait_ready()
        yield proc
    finally:
        stop(process, signal.SIGTERM, 30)
        log.close()


def log_lines(proc: DaemonProcess) -> list[dict[str, Any]]:
    """The daemon's JSON log lines so far."""
    out = []
    for line in (proc.directory / "daemon.log").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@asynccontextmanager
async def receivers(count: int) -> AsyncIterator[list[WebhookReceiver]]:
    """``count`` webhook receivers on loopback in this process (arrivals are timestamped)."""
    hooks = [WebhookReceiver() for _ in range(count)]
    async with anyio.create_task_group() as tg:
        for hook in hooks:
            await tg.start(hook.server.serve)
        yield hooks
        tg.cancel_scope.cancel()


def json_notifier(hook: WebhookReceiver, **extra: Any) -> dict[str, Any]:
    """A ``format: json`` notifier posting to ``hook``."""
    return {"url": hook.apprise_url("json"), "format": "json", **extra}


def histogram_quantile(samples: dict[str, float], name: str, q: float) -> float:
    """A quantile of a Prometheus histogram, interpolated linearly within its bucket
    (as PromQL's ``histogram_quantile`` does)."""
    buckets = sorted(
        (float(key.split('le="')[1].split('"')[0]), value)
        for key, value in samples.items()
        if key.startswith(f"{name}_bucket{{")
    )
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower
