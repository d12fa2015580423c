"""Saying the watcher is alive: heartbeat messages for a dead-man's switch, and systemd's
status line and watchdog pings.

Both run from the event loop they vouch for: a hung loop stops them, and that
silence is the alarm.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio
import structlog

from watcher import __version__
from watcher.config.model import HeartbeatConfig
from watcher.core.events import EventKind
from watcher.core.statuses import Severity
from watcher.daemon.outbox import Outbox
from watcher.daemon.sdnotify import SystemdNotifier
from watcher.daemon.views import DaemonView, status_line
from watcher.notify.dispatcher import watcher_event

__all__ = ["heartbeats", "hostname", "systemd_status"]

log = structlog.get_logger("watcher.daemon")


def hostname() -> str:
    """The pod name under Kubernetes (a StatefulSet pod's hostname is its name)."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or os.uname().nodename


async def heartbeats(
    view: DaemonView,
    outbox: Outbox,
    settings: Callable[[], HeartbeatConfig | None],
    ready: anyio.Event,
) -> None:
    """``heartbeat``: a "watcher alive" message every interval, from the first READY.

    ``settings`` is read each time: a reload may add, change or remove the section.
    """
    await ready.wait()
    beat = 0
    while True:
        config = settings()
        if config is None:
            await anyio.sleep(60.0)
            continue
        beat += 1
        now = view.clock.wall()
        event = watcher_event(
            EventKind.WATCHER_HEARTBEAT,
            Severity.INFO,
            hostname(),
            now,
            {
                "status": status_line(view),
                "uptime_seconds": round(view.uptime(), 1),
                "interval_seconds": config.interval,
                "version": __version__,
                "to": "alive",
            },
            view.started_at,
            beat,
        )
        sent = await outbox.dispatcher.heartbeat(event, config.notify)
        log.debug("heartbeat queued", notifiers=sent)
        await anyio.sleep(config.interval)


async def systemd_status(view: DaemonView, systemd: SystemdNotifier) -> None:
    """STATUS every few seconds; WATCHDOG=1 at half of WATCHDOG_USEC, from this loop,
    so a hung event loop stops the pings and systemd restarts the service."""
    watchdog = systemd.watchdog
    every = min(watchdog, 10.0) if watchdog else 10.0
    while True:
        fields = {"status": status_line(view)}
        if watchdog:
            fields["watchdog"] = "1"
        if not view.is_ready:
            # READY waits for the first pass, which the providers' budgets pace (2,000
            # Trigger.dev watches take ~100 s): keep systemd's start timeout ahead of it.
            fields["extend_timeout_usec"] = str(int(every * 3 * 1_000_000))
        systemd.send(**fields)
        await anyio.sleep(every)
