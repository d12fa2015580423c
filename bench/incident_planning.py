"""What incidents cost the publish path: the dispatcher's ``plan`` per event, in a storm
(10,000 failures of one group: one incident fed 10,000 times) and spread (2,000
groups each failing once: 2,000 incidents), and the reminder tick over 2,000 open
incidents with escalation tiers. Pure CPU in this process (no server is involved).

    python -m bench.incident_planning [--rounds 7]

Run it in a checkout of an earlier commit too (the script uses only the API both
share) and compare the medians side by side, in one session on one machine.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import anyio
import structlog

from watcher.config.loader import parse_config
from watcher.config.notifications import build_routes
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.statuses import Severity, Source
from watcher.notify.dispatcher import Dispatcher

T0 = datetime(2026, 11, 22, 10, tzinfo=UTC)
CONFIG = """
notifiers: [{url: json://a, tags: [page]}, {url: json://b, tags: [boss]}]
routes:
  - match: {severity: failure}
    notify: [page]
    repeat_interval: 1h
"""
TIERS = "    escalate: [{after: 10m, notifiers: [boss]}, {after: 30m, notifiers: [boss]}]\n"


class _Clock:
    def now(self) -> float:
        return 0.0

    def wall(self) -> datetime:
        return T0

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - never awaited
        await anyio.sleep(seconds)


async def _sink(plan: object) -> None:  # pragma: no cover - plans are not sunk here
    return None


def _failure(group: int, run: int) -> Event:
    watch = WatchRef(WatchType.PARALLEL_TASK_GROUP, f"tgrp_{group}", f"g{group}", freeze({}))
    return Event(
        f"evt_{group}_{run}",
        EventKind.GROUP_RUNS_FAILED,
        Severity.FAILURE,
        Source.PARALLEL,
        watch,
        f"trun_{group}_{run}",
        "running",
        "failed",
        T0,
        freeze({"group_id": f"tgrp_{group}", "error": "boom"}),
    )


def _dispatcher(tiers: bool) -> Dispatcher:
    try:
        config = parse_config(CONFIG + (TIERS if tiers else ""))
    except Exception:  # an older checkout: no escalate key
        config = parse_config(CONFIG)
    return Dispatcher(build_routes(config.routes, config.notifications), _Clock(), sink=_sink)


def _time(fn: Callable[[], object]) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


async def main(rounds: int) -> None:
    # The debug line per unrouted event would be the cost measured.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    storm = [_failure(0, i) for i in range(10_000)]
    spread = [_failure(g, 0) for g in range(2_000)]
    later = T0 + timedelta(minutes=11)
    results: dict[str, list[float]] = {"storm": [], "spread": [], "tick": []}
    for _ in range(rounds):
        results["storm"].append(_time(partial(_dispatcher(True).plan, storm)) / len(storm))
        spread_desk = _dispatcher(True)
        results["spread"].append(_time(partial(spread_desk.plan, spread)) / len(spread))
        results["tick"].append(_time(partial(spread_desk.plan_reminders, later)))
    for name, values in results.items():
        unit = "ms per tick (2,000 open)" if name == "tick" else "µs per event"
        scale = 1e3 if name == "tick" else 1e6
        print(f"{name:7s} median {statistics.median(values) * scale:8.1f} {unit} ({rounds} rounds)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    anyio.run(main, parser.parse_args().rounds)
