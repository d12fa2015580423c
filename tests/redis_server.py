"""A real redis-server on a free loopback port, persistence off, for the cluster tests.

Without the binary the tests that need it are skipped with the reason (``make test``
lists them at the end); under ``CI=true`` that is a failure: ``.ci/run`` installs Debian's
``redis-server`` package first.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
from cli_harness import free_port

__all__ = ["RedisServer", "redis_binary", "running_redis"]


def redis_binary() -> str:
    """The redis-server (or valkey-server) binary; skip (fail under ``CI=true``) without."""
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found is None:
        reason = (
            "redis-server is not installed: the cluster tests need a real one "
            "(apt-get install redis-server; .ci/run does it)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@dataclass
class RedisServer:
    """One redis-server process; ``stop`` and ``start`` again keep the port (a restart)."""

    binary: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING (10 s at most)."""
        with (self.workdir / f"redis-{self.port}.log").open("ab") as log:
            self.proc = self._spawn(log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.ping():
                return
            time.sleep(0.02)  # polling a child process's socket: no event to wait on
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def _spawn(self, log: BinaryIO) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def ping(self) -> bool:
        """Whether it answers PING now."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (SIGKILL: an outage, not a clean stop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def running_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A started server, stopped after the test (the body of a fixture)."""
    server = RedisServer(redis_binary(), free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
