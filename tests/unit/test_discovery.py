"""Which discovered runs a trigger_runs watch follows, announces or leaves."""

from __future__ import annotations

from watcher.core.discovery import Adoption, plan_adoption
from watcher.core.schedule import SchedulePolicy, initial_state
from watcher.core.sharding import Shard, shard_of
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source
from watcher.core.watch import DiscoveryState, DiscoveryStep

ONE = Shard(0, 1)


def run(run_id: str, status: str = "EXECUTING") -> RunSnapshot:
    return RunSnapshot(Source.TRIGGER, run_id, status)


def step(
    new: tuple[RunSnapshot, ...] = (), baseline: tuple[RunSnapshot, ...] = ()
) -> DiscoveryStep:
    state = DiscoveryState(initial_state(SchedulePolicy()))
    return DiscoveryStep(state, (), None, new, baseline)


def test_the_baseline_follows_running_runs_silently_and_leaves_finished_ones() -> None:
    plan = plan_adoption(
        step(baseline=(run("run_a"), run("run_done", "COMPLETED"), run("run_b", "QUEUED"))),
        shard=ONE,
        following=0,
        max_runs=10,
    )
    assert plan == Adoption(follow=((run("run_a"), False), (run("run_b", "QUEUED"), False)))


def test_new_runs_are_followed_and_announced_until_the_cap_then_announced_only() -> None:
    new = tuple(run(f"run_{i}") for i in range(4))
    plan = plan_adoption(step(new=new), shard=ONE, following=8, max_runs=10)
    assert plan.follow == ((new[0], True), (new[1], True))
    assert plan.announce_only == new[2:]
    assert plan.over_cap == new[2:]


def test_a_baseline_over_the_cap_is_only_told_about() -> None:
    plan = plan_adoption(step(baseline=(run("run_a"),)), shard=ONE, following=3, max_runs=3)
    assert plan == Adoption(over_cap=(run("run_a"),))


def test_runs_another_shard_owns_are_left_to_it() -> None:
    runs = tuple(run(f"run_{i:02d}") for i in range(20))
    shard = Shard(0, 2)
    plan = plan_adoption(step(new=runs), shard=shard, following=0, max_runs=100)
    followed = {r.run_id for r, _ in plan.follow}
    assert followed == {r.run_id for r in runs if shard_of(r.run_id, 2) == 0}
    assert 0 < len(followed) < 20
