"""The realtime feed's decisions that need no server: early discovery, its spacing, and
which runs it covers and polls."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from watcher.config.loader import parse_config
from watcher.config.model import WatchConfig
from watcher.core.events import WatchType
from watcher.core.schedule import SchedulePolicy
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source
from watcher.core.watch import new_watch_state
from watcher.daemon.realtime import EARLY_DISCOVERY_SPACING, RealtimeFeed
from watcher.daemon.runtime import Kind, WatchRuntime
from watcher.sources.trigger_realtime import run_of_row


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - not awaited here
        self.t += seconds


class Host:
    def __init__(self, config_yaml: str) -> None:
        config = parse_config(config_yaml)
        self.configs: dict[str, WatchConfig] = {w.ref().key: w for w in config.watches}
        self.registry: dict[str, WatchRuntime] = {}
        self.polled: list[str] = []
        self.covered: dict[str, bool] = {}
        self.applied: list[tuple[str, str]] = []
        self.confirmed: list[str] = []
        policy = SchedulePolicy(1.0, 10.0)
        for key, watch in self.configs.items():
            ref = watch.ref()
            kind = Kind.DISCOVERY if ref.type is WatchType.TRIGGER_RUNS else Kind.RUN
            self.registry[key] = WatchRuntime(
                key, ref, kind, ref.id, policy, new_watch_state(policy, announce=False)
            )

    def poll_soon(self, rt: WatchRuntime) -> None:
        self.polled.append(rt.key)

    def cover(self, rt: WatchRuntime, pushed: bool) -> None:
        rt.pushed = pushed
        self.covered[rt.key] = pushed

    async def apply_pushed(self, rt: WatchRuntime, snapshot: RunSnapshot) -> None:
        self.applied.append((rt.key, snapshot.status))

    def confirm(self, rt: WatchRuntime) -> None:
        self.confirmed.append(rt.key)


def feed(host: Host, clock: Clock) -> RealtimeFeed:
    config = parse_config("{}").sources.trigger
    client: Any = object()  # never called: these tests feed rows by hand
    return RealtimeFeed(host, client, config, clock=clock, rng=random.Random(1))


WATCHES = """
watches:
  - {type: trigger_runs, id: charges, filter: {task: [charge]}}
  - {type: trigger_runs, id: eu, filter: {tag: [eu]}, mode: poll}
  - {type: trigger_run, id: run_a}
"""


def test_a_new_run_starts_the_matching_discovery_once_per_spacing() -> None:
    host, clock = Host(WATCHES), Clock()
    realtime = feed(host, clock)
    realtime._discovered("charge", ())
    realtime._discovered("charge", ())  # the same instant: spaced out
    realtime._discovered("refund", ("eu",))  # eu is in poll mode; no task match otherwise
    clock.t += EARLY_DISCOVERY_SPACING
    realtime._discovered("charge", ())
    assert host.polled == ["trigger_runs:charges", "trigger_runs:charges"]


def test_rows_of_followed_runs_and_possible_discoveries_are_kept_the_rest_not() -> None:
    host = Host(WATCHES)
    realtime = feed(host, Clock())
    realtime._followed_ids = {"run_a"}
    assert realtime._keeps({"friendlyId": "run_a", "taskIdentifier": "x"})
    assert realtime._keeps({"friendlyId": "run_z", "taskIdentifier": "charge", "runTags": []})
    assert not realtime._keeps({"friendlyId": "run_z", "taskIdentifier": "sync", "runTags": ["eu"]})


def watching_run_a(host: Host) -> WatchRuntime:
    rt = host.registry["trigger_run:run_a"]
    seen = RunSnapshot(Source.TRIGGER, "run_a", "EXECUTING", updated_at="2026-12-02T07:00:00.120Z")
    rt.state = new_watch_state(rt.policy, announce=False, snapshot=seen)
    return rt


SAME = {"friendlyId": "run_a", "status": "EXECUTING", "updatedAt": "2026-12-02 07:00:00.12"}


@pytest.mark.anyio
async def test_a_snapshot_row_that_moved_polls_the_run_and_a_still_one_does_not() -> None:
    host = Host(WATCHES)
    realtime = feed(host, Clock())
    watching_run_a(host)
    assert run_of_row(SAME) is not None
    await realtime._changed([SAME], list(realtime.followed()))
    assert host.polled == []  # nothing the watch has not seen
    retried = {**SAME, "updatedAt": "2026-12-02 07:00:05"}  # EXECUTING both sides of a retry
    await realtime._changed([retried], list(realtime.followed()))
    waiting = {**SAME, "status": "WAITING_TO_RESUME", "updatedAt": "2026-12-02 07:00:09.5"}
    await realtime._changed([waiting], list(realtime.followed()))
    # A snapshot shows where a run stands, not what it passed through: each is polled.
    assert host.polled == ["trigger_run:run_a", "trigger_run:run_a"]
    assert (realtime.changes, host.applied) == (2, [])


@pytest.mark.anyio
async def test_a_live_row_of_a_covered_run_is_applied_or_polled_by_what_it_can_tell() -> None:
    host = Host(WATCHES)
    realtime = feed(host, Clock())
    rt = watching_run_a(host)
    realtime.covered.add(rt.key)
    followed = list(realtime.followed())
    waiting = {**SAME, "status": "WAITING_TO_RESUME", "updatedAt": "2026-12-02 07:00:09.5"}
    await realtime._changed([waiting], followed, [("EXECUTING", "WAITING_TO_RESUME")])
    assert (host.applied, host.polled) == ([("trigger_run:run_a", "WAITING")], [])
    # The same row after a batch that also passed through a retry: polled for the attempt.
    retried = ("EXECUTING", "RETRYING_AFTER_FAILURE", "WAITING_TO_RESUME")
    await realtime._changed([waiting], followed, [retried])
    done = {**SAME, "status": "COMPLETED_SUCCESSFULLY", "updatedAt": "2026-12-02 07:00:19"}
    await realtime._changed([done], followed, [("EXECUTING", "COMPLETED_SUCCESSFULLY")])
    assert host.polled == ["trigger_run:run_a", "trigger_run:run_a"]
    assert (realtime.applied, realtime.changes) == (1, 2)
