"""The commands that act on a configuration: check-config, once, test-notify, run."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import anyio

from watcher.cli.exits import EXIT_FAILED, EXIT_OK
from watcher.cli.table import table
from watcher.config.loader import ConfigError
from watcher.config.model import WatcherConfig
from watcher.config.settings import Settings
from watcher.core.statuses import Severity
from watcher.daemon.app import Daemon, build_channels, check_credentials
from watcher.daemon.state import state_file_problem
from watcher.notify.render import Message

__all__ = ["check_config", "once", "run", "test_notify"]


def check_config(config: WatcherConfig, settings: Settings, args: argparse.Namespace) -> int:
    """Validate everything ``run`` would validate before it starts polling."""
    check_credentials(config, settings)
    slots = build_channels(config, source=str(args.config or settings.watcher_config))
    if config.state_file is not None and (problem := state_file_problem(config.state_file)):
        raise ConfigError([f"state_file: {problem}"])
    types = Counter(w.type for w in config.watches)
    print(f"config OK: {len(config.watches)} watches", end="")
    if types:
        print(" (" + ", ".join(f"{n} {t}" for t, n in sorted(types.items())) + ")", end="")
    routes = (
        "every notifier gets every event"
        if config.routes is None
        else f"{len(config.routes)} routes"
    )
    print(f", {len(slots)} notifiers, {routes}")
    for slot in slots:
        family = getattr(slot.notifier, "family", "text")
        print(
            f"  notifier {slot.name} tags={sorted(slot.tags)} format={slot.format} style={family}"
        )
    return EXIT_OK


def once(config: WatcherConfig, settings: Settings) -> int:
    """Poll every watch once, print a table, exit 1 if any watch errored."""
    daemon = Daemon(config, settings, channels=[])
    rows = anyio.run(daemon.once)
    lines = [["WATCH", "NAME", "STATE", "DETAIL"]]
    lines += [[r.key, r.name, r.state, r.detail] for r in rows]
    print(table(lines))
    failed = [r for r in rows if r.state == "error"]
    for row in failed:
        print(f"error: {row.key}: {row.problem}")
    return EXIT_FAILED if failed else EXIT_OK


def test_notify(config: WatcherConfig, tags: list[str]) -> int:
    """Send one test message to every notifier (or those with ``tags``); print each result."""
    slots = build_channels(config)
    if tags:
        slots = [s for s in slots if s.tags & set(tags)]
    if not slots:
        print("no notifier matches" + (f" tags {', '.join(tags)}" if tags else ""))
        return EXIT_FAILED
    message = Message(
        "[TEST] run-watcher test notification",
        "If you can read this, run-watcher can reach this notifier.",
        Severity.INFO,
    )

    async def send_all() -> list[tuple[str, bool, str, float]]:
        results: list[tuple[str, bool, str, float]] = []

        async def one(index: int) -> None:
            result = await slots[index].notifier.send(message)
            results.append(
                (slots[index].name, result.ok, result.detail or result.status, result.elapsed)
            )

        async with anyio.create_task_group() as tg:
            for i in range(len(slots)):
                tg.start_soon(one, i)
        return sorted(results)

    failures = 0
    for name, ok, detail, elapsed in anyio.run(send_all):
        mark = "ok  " if ok else "FAIL"
        print(f"{mark} {name} ({elapsed:.2f}s){'' if ok else ': ' + detail}")
        failures += not ok
    return EXIT_FAILED if failures else EXIT_OK


def run(config: WatcherConfig, settings: Settings, config_path: Path) -> int:
    """Run the daemon until a signal stops it; SIGHUP re-reads ``config_path``."""
    daemon = Daemon(config, settings, config_path=config_path)
    try:
        anyio.run(daemon.run)
    except BaseExceptionGroup as group:
        # A ConfigError raised inside the daemon's task group (the HTTP port in use,
        # say) reaches the user as its message and exit 2, not as a traceback.
        if (error := ConfigError.only_in(group)) is None:
            raise
        raise error from None
    return EXIT_OK
