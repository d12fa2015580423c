"""Which extra realtime shapes cover the runs the environment's shape leaves out."""

from __future__ import annotations

from watcher.core.shape_plan import Candidate, ShapeSpec, plan_shapes


def runs(n: int, *tags: str, rank: int = 0, prefix: str = "run") -> list[Candidate]:
    return [Candidate(f"{prefix}_{i:04d}", tags, rank) for i in range(n)]


def test_a_tag_held_by_many_left_out_runs_covers_them_with_one_connection() -> None:
    plan = plan_shapes([*runs(300, "eu", prefix="a"), *runs(200, "us", prefix="b")], 4, cap=1000)
    assert plan.shapes[:2] == (ShapeSpec("tag", "eu"), ShapeSpec("tag", "us"))
    assert plan.uncovered == ()
    assert plan.expected["a_0007"] == ShapeSpec("tag", "eu")


def test_the_rest_get_a_shape_each_by_rank_and_the_remainder_is_counted() -> None:
    watched = runs(3, rank=0, prefix="w")  # trigger_run watches
    followed = runs(10, rank=3, prefix="f")  # followed by a discovery, idle
    plan = plan_shapes([*followed, *watched], 5, cap=1000)
    assert [s.key for s in plan.shapes[:3]] == ["w_0000", "w_0001", "w_0002"]
    assert len(plan.shapes) == 5
    assert len(plan.uncovered) == 8


def test_a_tag_that_would_be_capped_or_was_refused_is_not_chosen() -> None:
    plan = plan_shapes(runs(50, "big"), 2, cap=40)
    assert all(s.kind == "run" for s in plan.shapes)
    plan = plan_shapes(runs(50, "big"), 2, cap=1000, refused_tags={"big"})
    assert all(s.kind == "run" for s in plan.shapes)
    assert len(plan.uncovered) == 48


def test_a_tag_naming_a_single_run_is_no_better_than_a_run_shape() -> None:
    plan = plan_shapes([Candidate("run_1", ("solo",)), Candidate("run_2", ("other",))], 5, cap=100)
    assert {s.kind for s in plan.shapes} == {"run"}


def test_shapes_held_now_are_kept_on_a_tie_so_a_replan_does_not_churn() -> None:
    candidates = runs(10, rank=1)
    current = {ShapeSpec("run", "run_0009"), ShapeSpec("run", "run_0008")}
    plan = plan_shapes(candidates, 2, cap=1000, current=current)
    assert set(plan.shapes) == current
    # A run that matters more takes a connection from them.
    plan = plan_shapes([*candidates, Candidate("run_x", (), 0)], 2, cap=1000, current=current)
    assert ShapeSpec("run", "run_x") in plan.shapes


def test_no_connection_to_spare_leaves_every_run_polled() -> None:
    plan = plan_shapes(runs(5, "eu"), 0, cap=1000)
    assert (plan.shapes, len(plan.uncovered)) == ((), 5)
