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
from watcher.daemon.realtime import RealtimeFeed
from watcher.daemon.realtime_rows import EARLY_DISCOVERY_SPACING, FIRST_SNAPSHOT_WAIT
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
        self.revision = 0
        self.polled: list[str] = []
        self.covered: dict[str, bool] = {}
        self.applied: list[tuple[str, str]] = []
        self.confirmed: list[str] = []
        self.seen: list[str] = []
        self.deferred: list[tuple[str, float]] = []
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

    def confirm(self, rt: WatchRuntime, listed: RunSnapshot) -> None:
        self.confirmed.append(rt.key)

    def saw(self, rt: WatchRuntime) -> None:
        self.seen.append(rt.key)

    def defer(self, rt: WatchRuntime, seconds: float) -> None:
        self.deferred.append((rt.key, seconds))


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


SAME: dict[str, Any] = {
    "friendlyId": "run_a",
    "status": "EXECUTING",
    "updatedAt": "2026-12-02 07:00:00.12",
    "createdAt": "2026-12-02 06:00:00",
    "taskIdentifier": "sync",
    "runTags": [],
    "startedAt": "2026-12-02 06:00:01",
    "completedAt": None,
    "delayUntil": None,
    "error": None,
}


@pytest.mark.anyio
async def test_a_snapshot_row_that_moved_polls_the_run_and_a_still_one_does_not() -> None:
    host = Host(WATCHES)
    realtime = feed(host, Clock())
    watching_run_a(host)
    assert run_of_row(SAME) is not None
    await realtime._changed([SAME])
    assert host.polled == []  # nothing the watch has not seen: it counts as seen
    assert host.seen == ["trigger_run:run_a"]
    retried = {**SAME, "updatedAt": "2026-12-02 07:00:05"}  # EXECUTING both sides of a retry
    await realtime._changed([retried])
    waiting = {**SAME, "status": "WAITING_TO_RESUME", "updatedAt": "2026-12-02 07:00:09.5"}
    await realtime._changed([waiting])
    # A snapshot shows where a run stands, not what it passed through: each is polled.
    assert host.polled == ["trigger_run:run_a", "trigger_run:run_a"]
    assert (realtime.changes, host.applied) == (2, [])


@pytest.mark.anyio
async def test_a_live_row_of_a_covered_run_is_applied_or_polled_by_what_it_can_tell() -> None:
    host = Host(WATCHES)
    realtime = feed(host, Clock())
    rt = watching_run_a(host)
    realtime.covered.add(rt.key)
    waiting = {**SAME, "status": "WAITING_TO_RESUME", "updatedAt": "2026-12-02 07:00:09.5"}
    await realtime._changed([waiting], [("EXECUTING", "WAITING_TO_RESUME")])
    assert (host.applied, host.polled) == ([("trigger_run:run_a", "WAITING")], [])
    # A batch that passed through a retry, but no new attempt began: the same attempt.
    retried = ("EXECUTING", "RETRYING_AFTER_FAILURE", "WAITING_TO_RESUME")
    await realtime._changed([{**waiting, "updatedAt": "2026-12-02 07:00:10"}], [retried])
    failed = {
        **SAME,
        "status": "COMPLETED_WITH_ERRORS",
        "updatedAt": "2026-12-02 07:00:19",
        "completedAt": "2026-12-02 07:00:19",
        "error": {"type": "BUILT_IN_ERROR", "name": "Error", "message": "x", "stackTrace": ""},
    }
    await realtime._changed([failed], [("WAITING_TO_RESUME", "COMPLETED_WITH_ERRORS")])
    assert host.polled == []  # the rows told it all: no /api read
    assert host.applied[1:] == [("trigger_run:run_a", "WAITING"), ("trigger_run:run_a", "FAILED")]
    # An error the API words otherwise is read from it.
    odd = {**failed, "error": {"type": "INTERNAL_ERROR", "code": "TASK_RUN_CRASHED"}}
    await realtime._changed([odd], [("EXECUTING", "COMPLETED_WITH_ERRORS")])
    assert host.polled == ["trigger_run:run_a"]
    assert (realtime.applied, realtime.changes) == (3, 1)


@pytest.mark.anyio
async def test_a_snapshot_row_is_the_first_poll_of_a_run_not_seen_yet() -> None:
    host = Host(WATCHES)
    realtime = feed(host, Clock())
    rt = host.registry["trigger_run:run_a"]
    realtime.added(rt)
    assert host.deferred == [("trigger_run:run_a", FIRST_SNAPSHOT_WAIT)]
    assert realtime.awaiting == 1
    await realtime._changed([SAME])
    assert host.applied == [("trigger_run:run_a", "EXECUTING")]
    assert (realtime.baselines, host.polled) == (1, [])
    realtime.covered.add(rt.key)
    realtime._first_snapshot_done()
    assert realtime.awaiting == 0
    assert host.polled == []


def test_runs_the_first_snapshot_did_not_hold_are_polled_then() -> None:
    host = Host(WATCHES)
    realtime = feed(host, Clock())
    realtime.added(host.registry["trigger_run:run_a"])
    realtime._first_snapshot_done()
    assert host.polled == ["trigger_run:run_a"]
    realtime.added(host.registry["trigger_run:run_a"])  # after the first snapshot: at once
    assert len(host.deferred) == 1


def test_the_followed_runs_track_the_registry_without_a_walk_per_response() -> None:
    host = Host(WATCHES)
    realtime = feed(host, Clock())
    assert [rt.key for rt in realtime.followed()] == ["trigger_run:run_a"]
    rt = host.registry["trigger_run:run_a"]
    rt.finished_at = 1.0  # finished: no longer followed, without a registry change
    assert realtime.followed() == []
    rt.finished_at = None
    ref = parse_config("watches: [{type: trigger_run, id: run_b}]").watches[0].ref()
    policy = SchedulePolicy(1.0, 10.0)
    host.registry[ref.key] = WatchRuntime(
        ref.key, ref, Kind.RUN, ref.id, policy, new_watch_state(policy, announce=False)
    )
    host.configs[ref.key] = parse_config("watches: [{type: trigger_run, id: run_b}]").watches[0]
    assert len(realtime.followed()) == 1  # the registry did not say it changed
    host.revision += 1
    assert sorted(rt.key for rt in realtime.followed()) == [
        "trigger_run:run_a",
        "trigger_run:run_b",
    ]
