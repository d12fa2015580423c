"""Parallel's official Python SDK (``parallel-web``) reads the simulator strictly.

The client validates every response against its pydantic models
(``_strict_response_validation``) and does not retry, so a shape the real API would
not send, or a status code it would not answer, fails here. run-watcher's own
requests must be the SDK's requests (paths and query).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import ServerSentEvent
from parallel import (
    APIStatusError,
    AsyncParallel,
    AsyncStream,
    NotFoundError,
    UnprocessableEntityError,
)
from parallel.types import (
    TaskGroupEventsResponse,
    TaskGroupGetRunsResponse,
    TaskGroupStatusEvent,
    TaskRunEvent,
)
from sdk_contract import Seen, requests_since, simulator

from watcher.clock import SystemClock
from watcher.core.budget import BudgetPolicy
from watcher.simulator.world import World
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.http import HttpLimits, Upstream, build_client
from watcher.sources.parallel import ParallelClient

pytestmark = pytest.mark.anyio

GROUP = "tgrp_contract"


def world_with_a_group() -> tuple[World, list[str]]:
    """A group of five runs: queued, running, completed, failed (with an error), cancelled."""
    world = World()
    world.add_group(GROUP, 5)
    runs = world.group_runs(GROUP)
    world.set_parallel_run(runs[1], "running")
    world.set_parallel_run(runs[2], "completed")
    world.set_parallel_run(runs[3], "failed", "Source site answered 503")
    world.set_parallel_run(runs[4], "cancelled")
    world.add_parallel_run("trun_single", "running")
    return world, runs


@asynccontextmanager
async def sdk(world: World) -> AsyncIterator[tuple[AsyncParallel, str]]:
    """The SDK's async client against the simulator: strict, no retries."""
    async with simulator(world) as url:
        client = AsyncParallel(
            api_key=world.parallel_key,
            base_url=url,
            max_retries=0,
            _strict_response_validation=True,
        )
        async with client:
            yield client, url


@asynccontextmanager
async def ours(url: str, key: str) -> AsyncIterator[ParallelClient]:
    """run-watcher's own Parallel client, with the headers production sends."""
    limits = HttpLimits(total_timeout=10.0, stream_timeout=10.0)
    gate = SourceGate(
        "parallel", BudgetPolicy(rate=1000, burst=1000), max_concurrency=4, clock=SystemClock()
    )
    async with build_client(url, {"x-api-key": key}, limits) as http:
        yield ParallelClient(Upstream("parallel", http, gate, limits))


async def run_events(stream: AsyncStream[TaskGroupGetRunsResponse]) -> list[TaskRunEvent]:
    """Every event of a runs stream; an ``error`` event fails the test."""
    events = []
    async for event in stream:
        assert isinstance(event, TaskRunEvent), event
        events.append(event)
    return events


async def group_events(
    stream: AsyncStream[TaskGroupEventsResponse],
) -> list[TaskGroupStatusEvent | TaskRunEvent]:
    """Every event of a group's events stream; an ``error`` event fails the test."""
    events: list[TaskGroupStatusEvent | TaskRunEvent] = []
    async for event in stream:
        assert isinstance(event, TaskGroupStatusEvent | TaskRunEvent), event
        events.append(event)
    return events


def _request(seen: Seen) -> tuple[str, str, dict[str, list[str]]]:
    method, path, query, _headers = seen
    return method, path, query


async def test_runs_and_groups_read_strictly() -> None:
    world, runs = world_with_a_group()
    async with sdk(world) as (client, url):
        single = await client.task_run.retrieve("trun_single")
        group = await client.task_group.retrieve(GROUP)
        failed = await client.task_group.retrieve_run(runs[3], task_group_id=GROUP)
        with pytest.raises(NotFoundError) as missing:
            await client.task_run.retrieve("trun_missing")
        async with ours(url, world.parallel_key) as mine:
            own_group = await mine.get_group(GROUP, Ticket(mine.upstream.gate))
            own_run = await mine.get_run("trun_single", Ticket(mine.upstream.gate))

    assert (single.run_id, single.status, single.is_active) == ("trun_single", "running", True)
    assert (own_run.status, own_run.updated_at) == (single.status, single.modified_at)
    counts = group.status.task_run_status_counts
    assert counts == {"queued": 1, "running": 1, "completed": 1, "failed": 1, "cancelled": 1}
    assert (group.status.num_task_runs, group.status.is_active) == (5, True)
    assert dict(own_group.counts) == counts
    assert own_group.is_active
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error.message == "Source site answered 503"
    assert missing.value.status_code == 404


async def test_the_runs_stream_sends_every_run_filtered_and_resumed() -> None:
    world, runs = world_with_a_group()
    async with sdk(world) as (client, url):
        every = await run_events(await client.task_group.get_runs(GROUP))
        failed = await run_events(await client.task_group.get_runs(GROUP, status="failed"))
        cursor = every[1].event_id
        rest = await run_events(await client.task_group.get_runs(GROUP, last_event_id=cursor))
        mark = len(world.seen)
        theirs = await run_events(
            await client.task_group.get_runs(
                GROUP, status="failed", last_event_id=every[0].event_id
            )
        )
        sdk_request = requests_since(world, mark)
        mark = len(world.seen)
        async with ours(url, world.parallel_key) as mine:
            read = await mine.failed_runs(GROUP, every[0].event_id, Ticket(mine.upstream.gate))
        own_request = requests_since(world, mark)

    # Every run once, active ones included, each at its current status.
    assert {e.run.run_id: e.run.status for e in every} == {
        runs[0]: "queued",
        runs[1]: "running",
        runs[2]: "completed",
        runs[3]: "failed",
        runs[4]: "cancelled",
    }
    assert all(e.type == "task_run.state" for e in every)
    assert [e.run.run_id for e in failed] == [runs[3]]
    assert failed[0].run.error is not None
    assert [e.event_id for e in rest] == [e.event_id for e in every[2:]]
    # run-watcher asks what the SDK asks, and reads the same failures.
    assert [_request(r) for r in own_request] == [_request(r) for r in sdk_request]
    assert [r.run_id for r in read.runs] == [e.run.run_id for e in theirs] == [runs[3]]
    assert read.cursor == theirs[-1].event_id


class _Collect:
    """A stream follower that keeps every event until the server closes the stream."""

    quiet_after: float | None = None

    def __init__(self) -> None:
        self.events: list[ServerSentEvent] = []

    async def event(self, sse: ServerSentEvent) -> bool:
        self.events.append(sse)
        return False

    async def quiet(self) -> None:
        """Never called: ``quiet_after`` is None."""


async def test_the_events_stream_resumes_and_honours_its_timeout() -> None:
    world, runs = world_with_a_group()
    world.set_parallel_run(runs[0], "completed")
    world.set_parallel_run(runs[1], "completed")  # the group is done: the stream ends
    async with sdk(world) as (client, url):
        events = await group_events(await client.task_group.events(GROUP, api_timeout=5))
        mark = len(world.seen)
        resumed = await group_events(
            await client.task_group.events(GROUP, last_event_id=events[2].event_id, api_timeout=5)
        )
        sdk_request = requests_since(world, mark)
        mark = len(world.seen)
        collect = _Collect()
        async with ours(url, world.parallel_key) as mine:
            await mine.follow_group_events(
                GROUP,
                events[2].event_id,
                Ticket(mine.upstream.gate),
                collect,
                idle_timeout=5,
                max_age=5,
            )
        own_request = requests_since(world, mark)

    kinds = {e.type for e in events}
    assert kinds == {"task_group_status", "task_run.state"}
    finished = [e.run.run_id for e in events if isinstance(e, TaskRunEvent)]
    assert sorted(finished) == sorted(runs)  # each run's terminal state, once
    last_status = [e for e in events if isinstance(e, TaskGroupStatusEvent)][-1]
    assert last_status.status.is_active is False
    assert [e.event_id for e in resumed] == [e.event_id for e in events[3:]]
    assert [sse.id for sse in collect.events] == [e.event_id for e in resumed]
    ((method, path, query, _),) = sdk_request
    ((own_method, own_path, own_query, _),) = own_request
    assert (own_method, own_path) == (method, path) == ("GET", f"/v1/tasks/groups/{GROUP}/events")
    assert sorted(own_query) == sorted(query) == ["last_event_id", "timeout"]
    assert own_query["last_event_id"] == query["last_event_id"]


async def test_the_result_endpoint_blocks_then_answers_200_408_or_404() -> None:
    world, runs = world_with_a_group()
    async with sdk(world) as (client, _url):
        with pytest.raises(APIStatusError) as timed_out:
            await client.task_run.result("trun_single", api_timeout=0)
        with pytest.raises(NotFoundError):
            await client.task_run.result(runs[3], api_timeout=0)  # failed
        with pytest.raises(NotFoundError):
            await client.task_run.result("trun_missing", api_timeout=0)
        with pytest.raises(UnprocessableEntityError):
            await client.task_run.result("trun_single", extra_query={"timeout": "soon"})
        done = await client.task_run.result(runs[2], api_timeout=0)

        answers: list[Any] = []

        async def wait_for_it() -> None:
            answers.append(await client.task_run.result("trun_single", api_timeout=30))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_it)
            # Once the blocking request has arrived, the run completes.
            with anyio.fail_after(10):
                await world.wait_for_requests("parallel.result", 6)
            world.set_parallel_run("trun_single", "completed")

    assert timed_out.value.status_code == 408
    assert done.run.status == "completed"
    assert done.output.type == "json"
    (blocked,) = answers
    assert (blocked.run.run_id, blocked.run.status) == ("trun_single", "completed")


async def test_errors_have_the_documented_shape() -> None:
    world, _runs = world_with_a_group()
    async with simulator(world) as url, httpx.AsyncClient(base_url=url) as http:
        answer = await http.get("/v1/tasks/runs/trun_single")
    assert answer.status_code == 401
    body = answer.json()
    assert body["type"] == "error"
    assert set(body["error"]) >= {"ref_id", "message"}
