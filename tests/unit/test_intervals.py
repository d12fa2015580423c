"""How far apart an idle watch's polls may grow, per provider."""

from __future__ import annotations

import random

from watcher.clock import SystemClock
from watcher.config.loader import parse_config
from watcher.daemon.registry import WatchRegistry

CONFIG = """
polling: {max_interval: 5m}
watches:
  - {type: parallel_task_run, id: trun_a}
  - {type: parallel_task_group, id: tgrp_a}
  - {type: parallel_task_run, id: trun_slow, max_interval: 10m}
  - {type: trigger_run, id: run_a}
"""


def ceilings(yaml: str) -> dict[str, float]:
    config = parse_config(yaml)
    registry = WatchRegistry(
        polling=config.polling,
        sources=config.sources,
        clock=SystemClock(),
        rng=random.Random(1),
        gates={},
        clients={},
        workers={},
    )
    return {w.ref().id: registry._policy(w).max_interval for w in config.watches}


def test_idle_parallel_watches_are_polled_every_30_seconds_at_most() -> None:
    assert ceilings(CONFIG) == {"trun_a": 30.0, "tgrp_a": 30.0, "trun_slow": 600.0, "run_a": 300.0}


def test_the_parallel_ceiling_is_a_setting_and_never_above_pollings() -> None:
    slower = CONFIG.replace("polling:", "sources: {parallel: {max_interval: 2m}}\npolling:")
    assert ceilings(slower)["trun_a"] == 120.0
    faster = CONFIG.replace("max_interval: 5m}", "max_interval: 20s}")
    assert ceilings(faster) == {"trun_a": 20.0, "tgrp_a": 20.0, "trun_slow": 600.0, "run_a": 20.0}
