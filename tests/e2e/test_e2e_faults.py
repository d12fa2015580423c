"""Upstream faults: the daemon keeps running, reports the problem once, and its end once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from harness import running

from watcher.simulator.world import Fault, World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

WATCHES = [
    {"type": "trigger_run", "id": "run_f", "name": "faulty-trigger"},
    {"type": "parallel_task_run", "id": "trun_f", "name": "faulty-parallel"},
]
SOURCES = {
    "parallel": {"total_timeout": "1s", "timeout": "1s"},
    "trigger": {"total_timeout": "1s", "timeout": "1s"},
}


def setup(world: World) -> None:
    world.add_trigger_run("run_f", "sync", "EXECUTING")
    world.add_parallel_run("trun_f", "running")


_HTTP_DATE_SOON = "__http_date__"

FAULTS = [
    pytest.param("status", 401, [], "auth_failed", id="401"),
    pytest.param("status", 404, [], "not_found", id="404"),
    pytest.param("status", 429, [("retry-after", "1")], "rate_limited", id="429-retry-after"),
    pytest.param("status", 500, [], "unreachable", id="500"),
    pytest.param("hang", 0, [], "unreachable", id="timeout"),
    pytest.param("malformed", 0, [], "bad_response", id="malformed-json"),
    pytest.param(
        "status", 429, [("retry-after", _HTTP_DATE_SOON)], "rate_limited", id="429-http-date"
    ),
    pytest.param("status", 503, [("retry-after", "1")], "unreachable", id="503-retry-after"),
    pytest.param("reset", 0, [], "unreachable", id="reset-mid-body"),
    pytest.param("drip", 0, [], "unreachable", id="slow-drip"),
]


def of_kind(events: list[dict[str, Any]], kind: str, watch_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind and e["watch"]["id"] == watch_id]


@pytest.mark.parametrize("target", ["trigger", "parallel"])
@pytest.mark.parametrize(("kind", "status", "headers", "problem"), FAULTS)
async def test_fault_is_reported_once_and_recovery_once(
    target: str, kind: str, status: int, headers: list[tuple[str, str]], problem: str
) -> None:
    faulty, healthy = ("run_f", "trun_f") if target == "trigger" else ("trun_f", "run_f")
    path = "/api/v3/runs/run_f" if target == "trigger" else "/tasks/runs/trun_f"
    if headers and headers[0][1] == _HTTP_DATE_SOON:
        soon = datetime.now(UTC) + timedelta(seconds=2)
        headers = [("retry-after", format_datetime(soon, usegmt=True))]
    async with running(WATCHES, setup=setup, sources=SOURCES) as env:
        w = env.world
        w.add_fault(Fault(match=path, kind=kind, status=status, headers=headers))
        events = await env.wait_until(
            lambda evs: bool(of_kind(evs, "watch.error", faulty)), within=20
        )

        # The other watch, on the other upstream, is still watched during the fault.
        if target == "trigger":
            w.set_parallel_run("trun_f", "completed")
        else:
            w.set_trigger_run("run_f", "COMPLETED")
        await env.wait_until(
            lambda evs: any(
                e["subject_id"] == healthy for e in evs if e["kind"] == "run.status_changed"
            )
        )

        # A change during the outage must surface after it.
        if target == "trigger":
            w.set_trigger_run("run_f", "FAILED", "changed while we were blind")
        else:
            w.set_parallel_run("trun_f", "failed", "changed while we were blind")
        await env.settle()
        w.clear_faults()
        events = await env.wait_until(
            lambda evs: (
                bool(of_kind(evs, "watch.recovered", faulty))
                and any(
                    e["subject_id"] == faulty and e["kind"] == "run.status_changed" for e in evs
                )
            ),
            within=20,
        )
        events = await env.settle()

    errors = of_kind(events, "watch.error", faulty)
    assert len(errors) == 1, errors
    assert errors[0]["to_status"] == problem
    assert errors[0]["severity"] == "warning"
    if status:
        assert f"HTTP {status}" in errors[0]["details"]["message"]
    assert len(of_kind(events, "watch.recovered", faulty)) == 1
    assert of_kind(events, "watch.error", healthy) == []
    changes = [e for e in events if e["kind"] == "run.status_changed" and e["subject_id"] == faulty]
    assert len(changes) == 1
    assert changes[0]["details"]["error"] == "changed while we were blind"
    order = [e["kind"] for e in events if e["watch"]["id"] == faulty]
    assert (
        order.index("watch.error")
        < order.index("watch.recovered")
        <= order.index("run.status_changed")
    )


async def test_wrong_shape_and_unknown_status_never_crash() -> None:
    async with running(WATCHES, setup=setup) as env:
        env.world.add_fault(Fault(match="/api/v3/runs/run_f", kind="wrong_shape"))
        await env.wait_until(lambda evs: bool(of_kind(evs, "watch.error", "run_f")))
        env.world.clear_faults()
        env.world.set_trigger_run("run_f", "HIBERNATING")
        events = await env.wait_until(lambda evs: any(e["to_status"] == "HIBERNATING" for e in evs))
        env.world.set_trigger_run("run_f", "COMPLETED")
        events = await env.wait_until(lambda evs: any(e["to_status"] == "COMPLETED" for e in evs))
    error = of_kind(events, "watch.error", "run_f")[0]
    assert error["to_status"] == "bad_response"
    assert "unexpected response shape" in error["details"]["message"]
    hibernating = next(e for e in events if e["to_status"] == "HIBERNATING")
    assert hibernating["severity"] == "warning"
    assert hibernating["details"]["unknown_status"] is True


async def test_group_counts_still_flow_when_the_runs_stream_is_missing() -> None:
    def group(world: World) -> None:
        world.add_group("tgrp_x", 3, status="running")

    # The runs stream is polling's path: the group's event stream is tested in test_streams.
    watch = {"type": "parallel_task_group", "id": "tgrp_x", "mode": "poll"}
    async with running([watch], setup=group) as env:
        env.world.add_fault(Fault(match="/tasks/groups/tgrp_x/runs", status=404))
        (failed,) = env.world.progress_group("tgrp_x", 1, "failed", "boom")
        events = await env.wait_until(
            lambda evs: bool(of_kind(evs, "group.counts_changed", "tgrp_x"))
        )
        env.world.clear_faults()
        events = await env.wait_until(lambda evs: bool(of_kind(evs, "group.runs_failed", "tgrp_x")))
        events = await env.settle()
    kinds = [e["kind"] for e in events]
    assert kinds == ["watch.error", "group.counts_changed", "watch.recovered", "group.runs_failed"]
    assert events[0]["to_status"] == "not_found"
    assert "/tasks/groups/tgrp_x/runs" in events[0]["details"]["message"]
    assert events[1]["severity"] == "failure"
    assert events[3]["subject_id"] == failed


async def test_a_5xx_burst_is_absorbed_and_nothing_is_lost() -> None:
    async with running(WATCHES, setup=setup) as env:
        env.world.add_fault(Fault(match="/api/v3/runs/run_f", status=502, times=5))
        env.world.set_trigger_run("run_f", "FAILED", "during the burst")
        events = await env.wait_until(
            lambda evs: any(e["kind"] == "run.status_changed" for e in evs)
        )
        events = await env.settle()
    kinds = [e["kind"] for e in events if e["watch"]["id"] == "run_f"]
    assert kinds == ["watch.error", "watch.recovered", "run.status_changed"]


async def test_connection_refused_then_back() -> None:
    async with running(WATCHES, setup=setup) as env:
        assert env.served is not None
        env.served.down()
        await env.wait_until(
            lambda evs: (
                len(of_kind(evs, "watch.error", "run_f")) == 1
                and len(of_kind(evs, "watch.error", "trun_f")) == 1
            )
        )
        env.world.set_trigger_run("run_f", "COMPLETED")
        await env.served.up()
        events = await env.wait_until(
            lambda evs: any(e["kind"] == "run.status_changed" for e in evs)
        )
        events = await env.settle()
    errors = [e for e in events if e["kind"] == "watch.error"]
    assert {e["to_status"] for e in errors} == {"unreachable"}
    assert "connection failed" in errors[0]["details"]["message"]
    assert len(of_kind(events, "watch.recovered", "run_f")) == 1
    assert len(of_kind(events, "watch.recovered", "trun_f")) == 1


async def test_trigger_limiter_429_with_only_the_reset_header() -> None:
    """A simulator enforcing a tiny token bucket: the watcher waits for x-ratelimit-reset."""
    from watcher.simulator.api import TriggerLimiter

    def many(world: World) -> None:
        for i in range(8):
            world.add_trigger_run(f"run_l{i}", "t", "EXECUTING")

    watches = [{"type": "trigger_run", "id": f"run_l{i}"} for i in range(8)]
    limiter = TriggerLimiter(refill=4, interval=1.0, capacity=4)
    async with running(
        watches, setup=many, limiter=limiter, sources={"trigger": {"reserve": 0}}
    ) as env:
        for i in range(8):
            env.world.set_trigger_run(f"run_l{i}", "COMPLETED")
        events = await env.wait_until(
            lambda evs: sum(1 for e in evs if e["kind"] == "run.status_changed") == 8, within=30
        )
        events = await env.settle()
        rejected = limiter.rejected
        requests = env.world.requests.get("trigger.run", 0)
    assert not [e for e in events if e["kind"] == "watch.error"]
    assert requests > 8
    # The limiter's headers keep the watcher under it: few 429s for all those requests.
    assert rejected <= 3, (rejected, requests)


async def test_a_runs_stream_broken_mid_event_resumes_from_the_cursor() -> None:
    def group(world: World) -> None:
        world.add_group("tgrp_b", 6, status="running")

    watch = {"type": "parallel_task_group", "id": "tgrp_b", "mode": "poll"}
    async with running([watch], setup=group) as env:
        env.world.add_fault(
            Fault(match="/tasks/groups/tgrp_b/runs", kind="break_stream", after=2, times=1)
        )
        failed = env.world.progress_group("tgrp_b", 6, "failed", "boom")
        events = await env.wait_until(
            lambda evs: len([e for e in evs if e["kind"] == "group.runs_failed"]) >= 6
        )
        events = await env.settle()
        stream_reads = env.world.requests["parallel.runs_stream"]
    failures = [e["subject_id"] for e in events if e["kind"] == "group.runs_failed"]
    assert sorted(failures) == sorted(failed)  # every failed run once, none twice
    assert stream_reads >= 2  # the second read resumed after the last complete event
    assert not [e for e in events if e["kind"] == "watch.error"]
