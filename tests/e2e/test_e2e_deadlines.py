"""Deadlines against the simulator: a run left queued alerts once, at its deadline, and
resolves when it runs; a run that meets its deadlines sends nothing; a run the realtime
feed reports is looked at on the clock, with no poll."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from harness import running

from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ROUTES = [{"match": {}, "notify": ["all"], "send_resolved": True}]
SLOW = {"min_interval": "5s", "max_interval": "30s"}


def watch(run_id: str, mode: str, **deadlines: str) -> dict[str, Any]:
    return {"type": "trigger_run", "id": run_id, "mode": mode, "deadlines": deadlines}


@pytest.mark.parametrize("mode", ["poll", "auto"])
async def test_a_run_left_queued_alerts_once_and_resolves_when_it_runs(mode: str) -> None:
    world = World()
    world.add_trigger_run("run_q", "nightly-export", "QUEUED")
    world.add_trigger_run("run_ok", "nightly-export", "QUEUED")
    watches = [watch("run_q", mode, queued="2s"), watch("run_ok", mode, queued="1h")]
    sources = {"trigger": {"realtime": mode == "auto", "realtime_cross_check": "10m"}}
    async with running(watches, world=world, routes=ROUTES, polling=SLOW, sources=sources) as env:
        started = anyio.current_time()
        events = await env.wait_until(
            lambda es: any(e["kind"] == "run.deadline_missed" for e in es), within=15
        )
        took = anyio.current_time() - started
        reads = world.requests.get("trigger.run", 0)
        world.set_trigger_run("run_q", "EXECUTING")
        events = await env.wait_until(
            lambda es: any(e["kind"] == "condition.resolved" for e in es), within=40
        )
        if mode == "poll":  # two more polls: a repeat would have been published by then
            events = await env.settle()
    late = [e for e in events if e["kind"] == "run.deadline_missed"]
    assert [(e["subject_id"], e["details"]["deadline"]) for e in late] == [("run_q", "queued")]
    assert late[0]["details"]["status"] == "QUEUED"
    assert late[0]["details"]["limit_seconds"] == 2.0
    assert late[0]["details"]["elapsed_seconds"] >= 2.0
    assert took < 5.0  # at the deadline, not at the next poll (5 s or more apart)
    resolved = [e for e in events if e["kind"] == "condition.resolved"]
    assert [(e["subject_id"], e["details"]["now"]) for e in resolved] == [("run_q", "EXECUTING")]
    assert resolved[0]["details"]["condition"] == "run.deadline_missed"
    if mode == "auto":
        # Covered by the feed: the deadline came from the clock, without a poll.
        assert reads == 0


async def test_an_expected_run_that_does_not_come_alerts_at_window_plus_grace() -> None:
    world = World()
    world.add_trigger_run("run_old", "nightly-export", "FAILED", error="disk full")
    watches = [
        {
            "type": "trigger_runs",
            "id": "nightly",
            "filter": {"task": ["nightly-export"]},
            "expect": {"every": "3s", "grace": "1s", "status": "COMPLETED"},
            "mode": "poll",
        }
    ]
    polling = {"min_interval": "1s", "max_interval": "30s", "discovery_interval": "30s"}
    sources = {"trigger": {"realtime": False}}
    async with running(
        watches, world=world, routes=ROUTES, polling=polling, sources=sources
    ) as env:
        started = anyio.current_time()
        events = await env.wait_until(
            lambda es: any(e["kind"] == "runs.absent" for e in es), within=15
        )
        took = anyio.current_time() - started
        world.add_trigger_run("run_late", "nightly-export", "COMPLETED")
        events = await env.wait_until(
            lambda es: any(e["kind"] == "condition.resolved" for e in es), within=40
        )
    [missing] = [e for e in events if e["kind"] == "runs.absent"]
    assert 3.5 <= took < 8.0  # the window (3 s) and its grace (1 s), by the pass it asked for
    assert missing["severity"] == "failure"
    assert missing["details"]["expected_status"] == "COMPLETED"
    assert missing["details"]["seen_text"] == "no run seen"  # run_old predates the window
    [resolved] = [e for e in events if e["kind"] == "condition.resolved"]
    assert resolved["details"]["condition"] == "runs.absent"
    assert resolved["details"]["now"] == "COMPLETED"
    assert [e["kind"] for e in events].count("runs.absent") == 1
