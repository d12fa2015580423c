"""A fast fake Parallel API: nginx serving each run's JSON from a file.

The Python simulator is for behaviour; a ceiling benchmark needs a server that is never
the bottleneck. nginx (from the distribution's packages: ``apt-get install nginx-light``)
serves ``GET /v1/tasks/runs/{id}`` from files the simulator's own presenter wrote, so
the bodies are the simulator's, byte for byte. One worker, pinned to its own CPU; its
CPU share is read from ``/proc`` beside every figure.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import ProcStats, free_port, proc_stats, stop
from watcher.simulator.world import World

_CONF = """
worker_processes 1;
worker_cpu_affinity {affinity};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    # No open_file_cache: it holds a descriptor per run, past the process's limit at
    # 50,000 runs; opening a small file per request costs the server little.
    server {{
        listen 127.0.0.1:{port};
        location /v1/tasks/runs/ {{
            root {prefix}/www;
            default_type application/json;
        }}
    }}
}}
"""


@dataclass
class FakeServer:
    """A running nginx: its URL and its worker's pid."""

    url: str
    master: subprocess.Popen[bytes]
    worker: int

    def stats(self) -> ProcStats:
        """The worker's CPU time and memory now."""
        return proc_stats(self.worker)


def parallel_paths(prefix: str, count: int) -> list[str]:
    """The run ids' retrieve paths, as the daemon requests them."""
    return [f"/v1/tasks/runs/{prefix}{i}" for i in range(count)]


@contextmanager
def nginx(run_prefix: str, count: int, *, cpu: int = 1) -> Iterator[FakeServer]:
    """nginx serving ``count`` running Parallel runs ``{run_prefix}{i}`` on CPU ``cpu``."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise SystemExit("the ceiling benchmark needs nginx: apt-get install nginx-light")
    prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    prefix.chmod(0o755)  # nginx's worker drops to its own user: it must read the files
    runs = prefix / "www" / "v1" / "tasks" / "runs"
    runs.mkdir(parents=True)
    (prefix / "tmp").mkdir()
    world = World()
    for i in range(count):
        run_id = f"{run_prefix}{i}"
        run = world.add_parallel_run(run_id, "running")
        (runs / run_id).write_text(json.dumps(run.to_json(), separators=(",", ":")))
    port = free_port()
    conf = prefix / "nginx.conf"
    affinity = format(1 << cpu, "b")
    conf.write_text(_CONF.format(prefix=prefix, port=port, affinity=affinity))
    with (prefix / "stderr.log").open("wb") as stderr:
        master = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(prefix)], stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        worker = _worker_of(master.pid)
        yield FakeServer(f"http://127.0.0.1:{port}", master, worker)
    finally:
        stop(master, signal.SIGQUIT, 10)  # SIGQUIT: nginx's graceful stop
        shutil.rmtree(prefix, ignore_errors=True)


def _worker_of(master: int) -> int:
    """The pid of nginx's one worker (a child of the master)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children")
        if children.exists() and (pids := children.read_text().split()):
            return int(pids[0])
        time.sleep(0.05)
    raise RuntimeError("nginx started no worker")
