"""Trigger.dev's realtime API: the official SDK and Electric's client read the simulator.

``runs.subscribeToRun`` and ``runs.subscribeToRunsWithTag`` (``@trigger.dev/sdk`` 4.x;
the daemon's feed speaks only the current API version) and ``@electric-sql/client``'s
``ShapeStream`` follow
shapes the simulator serves while a test moves the runs; what they yield must be what
the provider's server would have let them see: every status in order, partial updates
merged, a reset shape (409) re-read without a gap, the window and tags respected.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from sdk_contract import simulator, trigger_sdk, values

from watcher.core.diff import diff_run
from watcher.core.events import WatchRef, WatchType
from watcher.core.pushed import read_row
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import TRIGGER_CURRENT_API_VERSION
from watcher.simulator.realtime import RealtimeServer
from watcher.simulator.world import World
from watcher.sources.trigger import trigger_headers
from watcher.sources.trigger_models import parse_run
from watcher.sources.trigger_realtime import run_of_row
from watcher.sources.trigger_realtime import skipped_columns as daemon_skipped_columns

pytestmark = pytest.mark.anyio

SKIP = ["payload", "output", "metadata"]


async def subscribed(
    node: str, which: str, url: str, world: World, operation: dict[str, Any], moves: list[Any]
) -> list[Any]:
    """Run ``operation`` in the SDK while ``moves`` are played, one per live request:
    each change waits until the client has read the last one and asked again."""
    results: list[dict[str, Any]] = []

    async def client() -> None:
        results.extend(await trigger_sdk(node, which, url, world.trigger_key, [operation]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(client)
        with anyio.fail_after(30):
            for index, move in enumerate(moves, start=1):
                await world.wait_for_requests("trigger.realtime_live", index)
                move()
    (value,) = values(results)
    assert isinstance(value, list)
    return value


async def test_subscribe_to_run_sees_every_status_until_it_completes(node: str) -> None:
    world = World()
    world.add_trigger_run("run_rt", "send-invoice", tags=["billing"])
    moves = [
        lambda: world.set_trigger_run("run_rt", "DEQUEUED"),
        lambda: world.set_trigger_run("run_rt", "EXECUTING"),
        lambda: world.set_trigger_run("run_rt", "RETRYING_AFTER_FAILURE"),
        lambda: world.set_trigger_run("run_rt", "EXECUTING"),
        lambda: world.set_trigger_run("run_rt", "COMPLETED_WITH_ERRORS", "card declined"),
    ]
    async with simulator(world) as url:
        operation = {"op": "subscribe_run", "id": "run_rt", "options": {"skipColumns": SKIP}}
        updates = await subscribed(node, "current", url, world, operation, moves)
    statuses = [u["status"] for u in updates]
    # apiStatusFromRunStatus: a retry shows as EXECUTING; DEQUEUED is its own status.
    assert statuses == ["QUEUED", "DEQUEUED", "EXECUTING", "EXECUTING", "EXECUTING", "FAILED"]
    final = updates[-1]
    assert final["id"] == "run_rt"
    assert final["isCompleted"] is True
    assert final["isFailed"] is True
    assert final["error"]["message"] == "card declined"
    assert final["tags"] == ["billing"]
    assert final.get("payload") is None  # skipped: customer data never crosses
    run = world.trigger_runs["run_rt"]
    assert final["updatedAt"] == run.updated_at  # the same instant the API reports


async def test_runs_with_a_tag_in_the_window_only(node: str) -> None:
    world = World()
    now = datetime.now(UTC)
    world.add_trigger_run("run_old", "sync", tags=["nightly"], created_at=now - timedelta(hours=2))
    for run_id in ("run_t1", "run_t2"):
        world.add_trigger_run(run_id, "sync", tags=["nightly", "eu"])
    world.add_trigger_run("run_other", "sync", tags=["adhoc"])

    def the_rest() -> None:
        world.set_trigger_run("run_other", "COMPLETED")
        world.set_trigger_run("run_old", "COMPLETED")
        world.set_trigger_run("run_t2", "CRASHED", "out of memory")

    moves = [lambda: world.set_trigger_run("run_t1", "COMPLETED"), the_rest]
    # One row per snapshot response: the client reads a chunked snapshot as Electric's.
    async with simulator(world, realtime=RealtimeServer(world, chunk=1)) as url:
        operation = {
            "op": "subscribe_tag",
            "tag": "nightly",
            "options": {"createdAt": "1h", "skipColumns": SKIP},
            "done": ["run_t1", "run_t2"],
        }
        updates = await subscribed(node, "current", url, world, operation, moves)
    assert {u["id"] for u in updates} == {"run_t1", "run_t2"}
    assert world.requests["trigger.realtime_snapshot_chunk"] >= 1
    last = {u["id"]: u["status"] for u in updates}
    assert last == {"run_t1": "COMPLETED", "run_t2": "CRASHED"}


async def test_electric_client_parses_every_column_the_schema_names(node: str) -> None:
    world = World()
    world.add_trigger_run("run_e", "export", tags=["a b", 'quo"te'], error=None)
    world.set_trigger_run("run_e", "EXECUTING")
    world.set_trigger_run("run_e", "COMPLETED_WITH_ERRORS", "disk full")
    async with simulator(world) as url:
        operation = {
            "op": "shape",
            "path": "/realtime/v1/runs/run_e",
            "params": {"skipColumns": ",".join(SKIP)},
        }
        (rows,) = values(await trigger_sdk(node, "current", url, world.trigger_key, [operation]))
    (row,) = rows
    assert row["friendlyId"] == "run_e"
    assert row["status"] == "COMPLETED_WITH_ERRORS"  # rows hold the internal status
    assert row["isTest"] is False
    assert isinstance(row["number"], int)
    assert sorted(row["runTags"]) == ["a b", 'quo"te']
    assert row["error"]["message"] == "disk full"
    assert " " in row["createdAt"]
    assert not row["createdAt"].endswith("Z")
    assert "payload" not in row
    assert "output" not in row


async def test_a_reset_shape_is_read_again_without_a_gap(node: str) -> None:
    world = World()
    world.add_trigger_run("run_r", "send-invoice")
    realtime = RealtimeServer(world)

    def reset_then_move() -> None:
        realtime.reset()  # the waiting live request answers 409 with a new handle
        world.set_trigger_run("run_r", "COMPLETED")

    async with simulator(world, realtime=realtime) as url:
        operation = {"op": "subscribe_run", "id": "run_r", "options": {"skipColumns": SKIP}}
        updates = await subscribed(
            node,
            "current",
            url,
            world,
            operation,
            [lambda: world.set_trigger_run("run_r", "EXECUTING"), reset_then_move],
        )
    assert updates[-1]["status"] == "COMPLETED"
    assert world.requests.get("trigger.realtime_reset", 0) >= 1


async def test_the_daemons_rows_read_as_the_retrieve_reads_the_same_run(node: str) -> None:
    # The columns the daemon asks for, read by Electric's own client and validated by
    # the SDK's row schema (SubscribeRunRawShape), make the snapshot a retrieve makes:
    # same status, error, times, tags, and so the same event ids.
    world = World()
    world.add_trigger_run("run_c", "export", tags=["eu", "billing"])
    world.set_trigger_run("run_c", "EXECUTING")
    world.set_trigger_run("run_c", "COMPLETED_WITH_ERRORS", "disk full")
    skip = ",".join(daemon_skipped_columns())
    async with simulator(world) as url:
        operations = [
            {"op": "shape", "path": "/realtime/v1/runs/run_c", "params": {"skipColumns": skip}},
            {"op": "subscribe_run", "id": "run_c", "options": {"skipColumns": skip.split(",")}},
        ]
        (rows, updates) = values(
            await trigger_sdk(node, "current", url, world.trigger_key, operations)
        )
        async with httpx.AsyncClient(
            base_url=url,
            headers=trigger_headers(world.trigger_key, TRIGGER_CURRENT_API_VERSION, "contract"),
        ) as api:
            body = (await api.get("/api/v3/runs/run_c")).content
    (raw,) = rows
    assert {"payload", "output", "metadata"}.isdisjoint(raw)
    assert updates[-1]["status"] == "FAILED"  # the SDK took every row the daemon reads
    row = run_of_row(raw)
    assert row is not None
    assert row.complete
    assert row.error_readable
    from_row = read_row(None, row)
    polled = parse_run(body, "retrieve")
    assert isinstance(from_row, RunSnapshot)
    for field in ("status", "updated_at", "error_message", "error_stack", "task", "tags"):
        assert getattr(from_row, field) == getattr(polled, field), field
    assert (from_row.started_at, from_row.finished_at) == (polled.started_at, polled.finished_at)
    watch = WatchRef(WatchType.TRIGGER_RUN, "run_c")
    before = replace(polled, status="EXECUTING", updated_at="2026-01-01T00:00:00.000Z")
    now = datetime.now(UTC)
    assert [e.event_id for e in diff_run(watch, before, from_row, observed_at=now)] == [
        e.event_id for e in diff_run(watch, before, polled, observed_at=now)
    ]
