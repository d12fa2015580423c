"""What keeps a large daemon responsive: counts read in chunks, the collector's schedule."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import pytest

from watcher.core.events import WatchRef, WatchType
from watcher.core.health import HealthState, Problem, ProblemKind
from watcher.core.schedule import SchedulePolicy, ScheduleState
from watcher.core.watch import WatchState
from watcher.daemon import gc_policy, views
from watcher.daemon.runtime import Kind, WatchRuntime

pytestmark = pytest.mark.anyio


def runtime(i: int) -> WatchRuntime:
    rt = WatchRuntime(
        key=f"w{i}",
        ref=WatchRef(WatchType.PARALLEL_TASK_RUN if i % 2 else WatchType.TRIGGER_RUN, f"r{i}"),
        kind=Kind.RUN,
        subject_id=f"r{i}",
        policy=SchedulePolicy(min_interval=1.0, max_interval=30.0),
        state=WatchState(schedule=ScheduleState(interval=1.0)),
    )
    match i % 4:
        case 1:
            rt.last_ok_at = 1.0
        case 2:
            problem = Problem(ProblemKind.UNREACHABLE, "down")
            health = HealthState(failures=3, reported=ProblemKind.UNREACHABLE, last_problem=problem)
            rt.state = WatchState(schedule=ScheduleState(interval=1.0), health=health)
        case 3:
            rt.finished_at = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    return rt


async def test_watches_counted_in_chunks_match_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views, "_COUNT_CHUNK", 7)
    registry = {rt.key: rt for rt in map(runtime, range(101))}
    counts = await views.count_watches(registry)
    assert counts == views.tally_watches(list(registry.values()))
    assert sum(counts.values()) == 101
    assert counts[("trigger", "run", "pending")] == 26  # i % 4 == 0
    assert counts[("trigger", "run", "error")] == 25  # i % 4 == 2
    assert counts[("parallel", "run", "ok")] == 25  # i % 4 == 1
    assert counts[("parallel", "run", "finished")] == 25  # i % 4 == 3


def test_the_collector_schedule_is_restored_after_the_daemon() -> None:
    before, enabled = gc.get_threshold(), gc.isenabled()
    with gc_policy.steady():
        assert gc.get_threshold() == gc_policy.STEADY_THRESHOLDS
        with gc_policy.building():
            assert not gc.isenabled()
        assert gc.isenabled() == enabled
        assert gc.get_freeze_count() > 0  # what was built
        gc_policy.settle()
        assert gc.get_freeze_count() > 0
        gc_policy.unsettle()
        assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before


def test_a_failure_while_paused_still_enables_the_collector() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_policy.building():
        raise RuntimeError("build failed")
    assert gc.isenabled()
