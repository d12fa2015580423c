"""systemd's notify protocol: READY, RELOADING, STOPPING, STATUS and WATCHDOG.

The protocol is one datagram per message on the unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace), each a
few ``KEY=value`` lines. It needs no library: libsystemd's ``sd_notify`` is
twenty lines of C around ``sendmsg``, and the Python wrappers add a C build or
a dependency for the same. Without ``$NOTIFY_SOCKET`` (not under systemd, or
``Type=exec``) every call is a no-op.

Sends never block the event loop: the socket is non-blocking, and a datagram
the manager cannot take right now is dropped and logged (the next status or
watchdog ping follows soon).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

__all__ = ["SystemdNotifier", "notify_address", "watchdog_interval"]

log = structlog.get_logger("watcher.systemd")


def notify_address(environ: Mapping[str, str]) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET``: a path, or ``\\0name`` for ``@name``."""
    value = environ.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises.

    None when the watchdog is off, or when ``$WATCHDOG_PID`` names another process.
    """
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner is not None and owner.strip() != str(pid):
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


class SystemdNotifier:
    """Sends state changes to the service manager, if there is one."""

    def __init__(self, address: str | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog
        self.sent = 0
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Configured from ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        address = notify_address(env)
        if env.get("NOTIFY_SOCKET") and address is None:
            log.warning("NOTIFY_SOCKET is not a unix socket path; systemd notifications off")
        return cls(address, watchdog_interval(env, os.getpid()) if address else None)

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self._sock is not None

    def send(self, **fields: str) -> bool:
        """Send one message of ``KEY=value`` lines (keys upper-cased). False if not sent."""
        if self._sock is None or self.address is None:
            return False
        lines = []
        for key, value in fields.items():
            # A newline would start a new assignment: STATUS text must stay one line.
            lines.append(f"{key.upper()}={value.replace(chr(10), ' ')}")
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            log.warning("systemd notification not sent", error=str(exc), fields=sorted(fields))
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        """``READY=1``: startup (or a reload) is complete."""
        return self.send(ready="1", status=status)

    def reloading(self) -> bool:
        """``RELOADING=1`` with the monotonic timestamp ``Type=notify-reload`` requires."""
        return self.send(
            reloading="1",
            monotonic_usec=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000),
            status="reloading the configuration",
        )

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.send(stopping="1", status="stopping: delivering what is queued")

    def status(self, text: str) -> bool:
        """``STATUS=``: one line for ``systemctl status``."""
        return self.send(status=text)

    def ping(self) -> bool:
        """``WATCHDOG=1``: the event loop is alive."""
        return self.send(watchdog="1")

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
