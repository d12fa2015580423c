"""The daemon against the simulator and a real webhook receiver: every transition once, none at baseline."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from harness import Env, running

from watcher.config.model import ParallelTaskRunWatch
from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

WATCHES: list[dict[str, Any]] = [
    {
        "type": "parallel_task_group",
        "id": "tgrp_e2e",
        "name": "nightly",
        "labels": {"team": "data"},
    },
    {"type": "parallel_task_run", "id": "trun_solo", "name": "solo"},
    {"type": "trigger_run", "id": "run_t1", "name": "invoices"},
    {
        "type": "trigger_runs",
        "id": "prod-failures",
        "filter": {"status": ["FAILED", "CRASHED"], "tag": ["prod"]},
    },
]

REQUIRED = {
    "event_id",
    "kind",
    "severity",
    "source",
    "watch",
    "subject_id",
    "from_status",
    "to_status",
    "observed_at",
    "details",
}


def setup(world: World) -> None:
    world.add_group("tgrp_e2e", 4)
    world.add_parallel_run("trun_solo", "running")
    world.add_trigger_run("run_t1", "send-invoice", "QUEUED", tags=["billing"])
    world.add_trigger_run("run_old", "sync", "FAILED", tags=["prod"])


def keyed(events: list[dict[str, Any]]) -> Counter[tuple[str, str, str | None, str]]:
    return Counter((e["kind"], e["subject_id"], e["from_status"], e["to_status"]) for e in events)


async def next_event(env: Env, before: int, kind: str, subject: str) -> list[dict[str, Any]]:
    return await env.wait_until(
        lambda evs: any(e["kind"] == kind and e["subject_id"] == subject for e in evs[before:])
    )


async def test_every_transition_exactly_once_and_none_at_baseline() -> None:
    async with running(WATCHES, setup=setup) as env:
        w = env.world
        assert await env.settle() == [], "the first sight of every watch is a silent baseline"

        w.progress_group("tgrp_e2e", 2, "running")
        events = await next_event(env, 0, "group.counts_changed", "tgrp_e2e")

        n = len(events)
        (failed_run,) = w.progress_group("tgrp_e2e", 1, "failed", "upstream site timed out")
        events = await next_event(env, n, "group.runs_failed", failed_run)

        n = len(events)
        w.set_trigger_run("run_t1", "EXECUTING")
        events = await next_event(env, n, "run.status_changed", "run_t1")
        n = len(events)
        w.set_trigger_run("run_t1", "CRASHED", "Worker ran out of memory")
        events = await env.wait_until(lambda evs: any(e["to_status"] == "CRASHED" for e in evs[n:]))

        n = len(events)
        w.set_parallel_run("trun_solo", "completed")
        events = await next_event(env, n, "run.status_changed", "trun_solo")

        n = len(events)
        w.add_trigger_run("run_new", "sync", "FAILED", tags=["prod"])
        events = await next_event(env, n, "run.status_changed", "run_new")

        n = len(events)
        w.progress_group("tgrp_e2e", 3, "completed")
        events = await next_event(env, n, "group.finished", "tgrp_e2e")
        events = await env.settle()

    assert keyed(events) == Counter(
        {
            ("group.counts_changed", "tgrp_e2e", "active", "active"): 2,
            ("group.runs_failed", failed_run, None, "failed"): 1,
            ("run.status_changed", "run_t1", "QUEUED", "EXECUTING"): 1,
            ("run.status_changed", "run_t1", "EXECUTING", "CRASHED"): 1,
            ("run.status_changed", "trun_solo", "running", "completed"): 1,
            ("run.status_changed", "run_new", None, "FAILED"): 1,
            ("group.counts_changed", "tgrp_e2e", "active", "inactive"): 1,
            ("group.finished", "tgrp_e2e", "active", "inactive"): 1,
        }
    )
    assert len({e["event_id"] for e in events}) == len(events)
    for event in events:
        assert set(event) >= REQUIRED
        assert datetime.fromisoformat(event["observed_at"]).tzinfo is not None
    by_subject = {(e["kind"], e["subject_id"]): e for e in events}
    crash = next(e for e in events if e["to_status"] == "CRASHED")
    assert crash["severity"] == "failure"
    assert crash["source"] == "trigger"
    assert crash["watch"] == {
        "type": "trigger_run",
        "id": "run_t1",
        "name": "invoices",
        "labels": {},
    }
    assert crash["details"]["error"] == "Worker ran out of memory"
    assert crash["url"] == "https://cloud.trigger.dev/runs/run_t1"
    failure = by_subject[("group.runs_failed", failed_run)]
    assert failure["details"]["error"] == "upstream site timed out"
    assert failure["watch"]["labels"] == {"team": "data"}
    assert by_subject[("group.finished", "tgrp_e2e")]["severity"] == "failure"
    assert by_subject[("run.status_changed", "run_new")]["watch"]["type"] == "trigger_runs"
    assert by_subject[("run.status_changed", "trun_solo")]["severity"] == "success"


async def test_discovery_finds_an_old_run_failing_deep_in_the_list() -> None:
    """A run created long ago that fails now sits pages deep; the pass reads the whole window."""

    def many(world: World) -> None:
        start = datetime.now(UTC) - timedelta(hours=3)
        world.add_trigger_run("run_deep", "sync", "EXECUTING", tags=["prod"], created_at=start)
        for i in range(250):
            world.add_trigger_run(
                f"run_{i:04d}",
                "sync",
                "FAILED",
                tags=["prod"],
                created_at=start + timedelta(seconds=i + 1),
            )

    watch = {
        "type": "trigger_runs",
        "id": "deep",
        "filter": {"status": ["FAILED"], "period": "1d"},
        "page_size": 50,
    }
    async with running([watch], setup=many) as env:
        assert await env.settle() == []
        env.world.set_trigger_run("run_deep", "FAILED", "found it")
        events = await env.wait_until(lambda evs: len(evs) >= 1)
        events = await env.settle()
        pages_per_pass = env.world.requests["trigger.list"]
    assert [(e["subject_id"], e["from_status"], e["to_status"]) for e in events] == [
        ("run_deep", None, "FAILED")
    ]
    assert events[0]["details"]["error"] == "found it"
    assert pages_per_pass >= 6  # 251 runs at 50 a page, at least one full pass


async def test_overlapping_watches_make_one_alert_per_change() -> None:
    """A run covered by a trigger_run and a trigger_runs filter, and a Parallel run
    covered by its own watch and its group's: each change is one event, carrying every
    covering watch, and a silence on one watch's label stops it."""

    def overlap(world: World) -> None:
        world.add_trigger_run("run_both", "charge", "EXECUTING", tags=["prod"])
        world.add_trigger_run("run_muted", "charge", "EXECUTING", tags=["prod"])
        world.add_group("tgrp_both", 3, status="running")

    watches: list[dict[str, Any]] = [
        {"type": "trigger_run", "id": "run_both", "name": "charge", "labels": {"team": "billing"}},
        {"type": "trigger_run", "id": "run_muted", "labels": {"mute": "yes"}},
        {
            "type": "trigger_runs",
            "id": "prod-failures",
            "filter": {"status": ["FAILED"], "tag": ["prod"]},
            "labels": {"team": "ops", "env": "prod"},
        },
        {"type": "parallel_task_group", "id": "tgrp_both", "name": "nightly", "mode": "poll"},
    ]
    async with running(
        watches, setup=overlap, silences=[{"name": "muted", "match": {"labels.mute": "yes"}}]
    ) as env:
        w = env.world
        (member,) = w.group_runs("tgrp_both")[:1]
        watches.append({"type": "parallel_task_run", "id": member, "name": "member"})
        assert env.daemon.watcher is not None
        env.daemon.watcher.add(ParallelTaskRunWatch.model_validate(watches[-1]))
        await env.settle()  # its baseline
        w.set_trigger_run("run_both", "FAILED", "card declined")
        w.set_trigger_run("run_muted", "FAILED", "also declined")
        w.set_parallel_run(member, "failed", "source down")
        events = await env.wait_until(
            lambda es: {e["subject_id"] for e in es} >= {"run_both", member}
        )
        events = await env.settle()  # every watch has polled after the changes
    by_subject = Counter(e["subject_id"] for e in events)
    assert by_subject["run_both"] == 1
    assert by_subject[member] == 1
    assert by_subject["run_muted"] == 0  # silenced by one covering watch's label
    (both,) = [e for e in events if e["subject_id"] == "run_both"]
    assert both["watch"]["id"] == "run_both"  # the most precise watch speaks
    assert both["watch"]["labels"] == {"team": "billing", "env": "prod"}
    assert [x["key"] for x in both["details"]["watches"]] == [
        "trigger_run:run_both",
        "trigger_runs:prod-failures",
    ]
    (run,) = [e for e in events if e["subject_id"] == member]
    assert {x["key"] for x in run["details"]["watches"]} == {
        f"parallel_task_run:{member}",
        "parallel_task_group:tgrp_both",
    }
