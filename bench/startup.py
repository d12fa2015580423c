"""Start-up: process start to systemd ``READY=1`` with 1,000 watches; ``--help``.

READY is sent once every watch has been polled once, so this is the time until
the daemon has a baseline for everything it watches. It is read off a real
``NOTIFY_SOCKET`` (a unix datagram socket this process listens on). With the
default request budgets the first pass is paced by them (one run); with the
budgets lifted the figure is the daemon's own cost (median of ``runs``).
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.common import ROOT, daemon, json_notifier, median, receivers, simulator, watcher_config
from bench.scale import _spec, _watches

WATCHES = 1000


LIFTED = {"requests_per_minute": 6_000_000, "burst": 100_000, "reserve": 0}


async def ready_time(sim_url: str, *, lifted: bool = False) -> float:
    """Seconds from ``Popen`` to ``READY=1`` on the notify socket."""
    path = Path(tempfile.mkdtemp(prefix="bench-notify-")) / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    try:
        async with receivers(1) as (hook,):
            config = watcher_config(sim_url, [json_notifier(hook)], _watches(WATCHES))
            if lifted:
                for source in config["sources"].values():
                    source.update(LIFTED)
            started = time.monotonic()
            async with daemon(config, env={"NOTIFY_SOCKET": str(path)}, wait_ready=False):
                with anyio.fail_after(120):
                    while True:
                        await anyio.wait_readable(sock)
                        if b"READY=1" in sock.recv(4096).split(b"\n"):
                            return time.monotonic() - started
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def help_time() -> float:
    """Seconds for ``run-watcher --help``."""
    started = time.monotonic()
    subprocess.run([str(ROOT / ".venv/bin/run-watcher"), "--help"], check=True, capture_output=True)
    return time.monotonic() - started


async def bench(runs: int) -> dict[str, Any]:
    """One start-up at the default budgets, ``runs`` with them lifted, seven ``--help``."""
    async with simulator(_spec(WATCHES)) as sim:
        paced = await ready_time(sim.url)
        ready = [await ready_time(sim.url, lifted=True) for _ in range(runs)]
    helps = [help_time() for _ in range(7)]
    return {
        "watches": WATCHES,
        "ready_paced_s": paced,
        "ready_s": median(ready),
        "ready_runs": ready,
        "help_s": median(helps),
        "help_runs": helps,
    }
