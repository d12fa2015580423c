"""The feed's batched cross-check: when a list pass is cheaper than a poll per run, and
what it makes of each covered run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watcher.core.cross_check import CheckPlan, judge, plan_check
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def test_a_list_pass_reaches_back_to_the_oldest_run_within_half_the_requests() -> None:
    created = [NOW - timedelta(minutes=m) for m in (5, 90, 30)] * 100  # 300 runs
    assert plan_check(created, 2_000, NOW) == CheckPlan(period="91m", max_pages=150)


def test_polling_each_run_stays_when_the_list_would_cost_as_much() -> None:
    created = [NOW - timedelta(minutes=5)] * 10
    assert plan_check(created, 500, NOW) == CheckPlan(period="6m", max_pages=5)
    assert plan_check(created, 501, NOW) is None  # 6 pages for 10 runs: not worth it
    assert plan_check(created[:1], 1, NOW) is None  # one run: its poll is one request
    assert plan_check([], 0, NOW) is None


def run(run_id: str, status: str, at: str | None) -> RunSnapshot:
    return RunSnapshot(Source.TRIGGER, run_id, status, updated_at=at)


def test_each_covered_run_is_confirmed_polled_or_left_to_its_own_poll() -> None:
    t1, t2 = "2026-12-02T11:00:00.000Z", "2026-12-02T11:30:00.000Z"
    known = {
        "run_same": run("run_same", "EXECUTING", t1),
        "run_status": run("run_status", "EXECUTING", t1),
        "run_time": run("run_time", "EXECUTING", t1),  # moved and came back: polled
        "run_beyond": run("run_beyond", "QUEUED", t1),  # past the page cap
    }
    listed = [
        run("run_same", "EXECUTING", t1),
        run("run_status", "FAILED", t2),
        run("run_time", "EXECUTING", t2),
        run("run_other", "COMPLETED", t2),  # nobody covers it
    ]
    verdict = judge(known, listed)
    assert verdict.confirmed == ("run_same",)
    assert verdict.moved == ("run_status", "run_time")
    assert verdict.unseen == ("run_beyond",)
