"""Trigger.dev's official SDKs read the simulator, and run-watcher asks as they do.

The 4.x SDK sends ``x-trigger-api-version: 2025-07-16`` and validates with the current
schemas; the 3.x SDK sends no version header and validates the legacy status set.
Every response must pass their zod schemas, every field must read as the provider's
presenters write it, and run-watcher's own requests (paths, query, headers,
pagination) must be the SDKs' requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sdk_contract import Seen, requests_since, simulator, trigger_sdk, values

from watcher.clock import SystemClock
from watcher.config.watches import TriggerRunsFilter
from watcher.core.budget import BudgetPolicy
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import (
    TRIGGER_CURRENT_API_VERSION,
    TRIGGER_CURRENT_STATUSES,
    TRIGGER_LEGACY_STATUSES,
    TriggerApiVersion,
)
from watcher.simulator.trigger_runs import INTERNAL_STATUSES, public_status
from watcher.simulator.world import World
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.http import HttpLimits, Upstream, build_client
from watcher.sources.trigger import TriggerClient, trigger_headers

pytestmark = pytest.mark.anyio

# Which SDK speaks which API version, and the header value each sends.
SDKS: dict[TriggerApiVersion, str] = {TRIGGER_CURRENT_API_VERSION: "current", "legacy": "legacy"}
HEADER = {TRIGGER_CURRENT_API_VERSION: TRIGGER_CURRENT_API_VERSION, "legacy": None}
# The header names both sides send; user agents differ by design.
COMPARED_HEADERS = ("authorization", "x-trigger-api-version")


@asynccontextmanager
async def watcher_client(
    url: str, key: str, version: TriggerApiVersion
) -> AsyncIterator[TriggerClient]:
    """run-watcher's own Trigger.dev client, with the headers production sends."""
    limits = HttpLimits(total_timeout=10.0)
    gate = SourceGate(
        "trigger", BudgetPolicy(rate=1000, burst=1000), max_concurrency=4, clock=SystemClock()
    )
    async with build_client(url, trigger_headers(key, version, "run-watcher/test"), limits) as http:
        yield TriggerClient(Upstream("trigger", http, gate, limits))


def every_status(world: World) -> dict[str, str]:
    """One run in each internal status the provider's server knows; run id -> status."""
    runs = {}
    for index, status in enumerate(sorted(INTERNAL_STATUSES)):
        run_id = f"run_{index:02d}_{status.lower()}"
        world.add_trigger_run(run_id, "send-invoice", tags=["billing", "prod"])
        if status not in {"PENDING", "DELAYED", "PENDING_VERSION", "WAITING_FOR_DEPLOY"}:
            world.set_trigger_run(run_id, "EXECUTING")
        failed = status in {"COMPLETED_WITH_ERRORS", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT"}
        world.set_trigger_run(run_id, status, "card declined" if failed else None)
        runs[run_id] = status
    return runs


@pytest.mark.parametrize("version", list(SDKS))
async def test_every_status_reads_as_the_provider_presents_it(
    node: str, version: TriggerApiVersion
) -> None:
    world = World()
    runs = every_status(world)
    header = HEADER[version]
    if not header:
        # The server's legacy set has PENDING_VERSION (its RunStatusUnspecifiedApiVersion),
        # the 3.x SDK's enum predates it: its readers would reject the real server too.
        pending = next(r for r, s in runs.items() if s == "PENDING_VERSION")
        del world.trigger_runs[pending], runs[pending]
    async with simulator(world) as url:
        operations: list[dict[str, Any]] = [{"op": "retrieve", "id": r} for r in runs]
        operations.append({"op": "list", "query": {"limit": 5}})
        *retrieved, listed = values(
            await trigger_sdk(node, SDKS[version], url, world.trigger_key, operations)
        )
        async with watcher_client(url, world.trigger_key, version) as ours:
            own = {r: await ours.get_run(r, Ticket(ours.upstream.gate)) for r in runs}

    allowed = TRIGGER_CURRENT_STATUSES if header else TRIGGER_LEGACY_STATUSES
    for run in retrieved:
        internal = runs[run["id"]]
        status = public_status(internal, header)
        assert run["status"] == status, internal
        assert status in allowed
        assert run["isExecuting"] == (status in {"EXECUTING", "DEQUEUED", "REATTEMPTING", "FROZEN"})
        # As the server computes it: every completed status but COMPLETED, CANCELED too.
        assert run["isFailed"] == (
            status in {"FAILED", "CRASHED", "SYSTEM_FAILURE", "INTERRUPTED", "CANCELED"}
        )
        assert run["isSuccess"] == (status == "COMPLETED")
        if header:  # the 3.x schema has no isWaiting
            assert run["isWaiting"] == (status == "WAITING")
        assert run["attemptCount"] == world.trigger_runs[run["id"]].attempt
        assert run["tags"] == ["billing", "prod"]
        snap: RunSnapshot = own[run["id"]]
        # run-watcher reads the same facts the SDK reads.
        assert (snap.status, snap.attempt, snap.task) == (
            run["status"],
            run["attemptCount"],
            run["taskIdentifier"],
        )
        assert datetime.fromisoformat(snap.updated_at or "") == datetime.fromisoformat(
            run["updatedAt"]
        )
        if "error" in run:
            assert run["error"]["message"] == "card declined"
            assert snap.error_message == "card declined"
    assert {r["id"] for r in listed} == set(runs)  # every page, through pagination.next
    assert all(r["env"]["name"] == "prod" and "user" not in r["env"] for r in listed)
    statuses_read = {r["status"] for r in retrieved}
    if header:
        assert not statuses_read & {"REATTEMPTING", "FROZEN", "WAITING_FOR_DEPLOY", "INTERRUPTED"}
    else:
        assert not statuses_read & {"DEQUEUED", "WAITING"}


@pytest.mark.parametrize("version", list(SDKS))
async def test_a_retry_reads_as_the_provider_shows_it(
    node: str, version: TriggerApiVersion
) -> None:
    world = World()
    world.add_trigger_run("run_retry", "send-invoice", "EXECUTING")
    async with simulator(world) as url:
        reads = []
        for step in ("RETRYING_AFTER_FAILURE", "EXECUTING", "COMPLETED_WITH_ERRORS"):
            world.set_trigger_run("run_retry", step, "Stripe API timed out")
            (run,) = values(
                await trigger_sdk(
                    node,
                    SDKS[version],
                    url,
                    world.trigger_key,
                    [{"op": "retrieve", "id": "run_retry"}],
                )
            )
            reads.append((run["status"], run["attemptCount"], run.get("error", {}).get("message")))
    middle = "EXECUTING" if HEADER[version] else "REATTEMPTING"
    assert reads == [
        # The failed attempt's error is not in the API while the run retries.
        (middle, 1, None),
        ("EXECUTING", 2, None),
        ("FAILED", 2, "Stripe API timed out"),
    ]


def _comparable(request: Seen) -> tuple[str, str, dict[str, list[str]], dict[str, str]]:
    method, path, query, headers = request
    return method, path, query, {h: headers[h] for h in COMPARED_HEADERS if h in headers}


FILTERS: list[dict[str, Any]] = [
    {},
    {"status": ["EXECUTING", "FAILED"]},
    {"task": ["send-invoice", "sync-crm"], "tag": ["prod"]},
    {"version": ["20261122.1"], "period": "2d", "is_test": False},
    {"queue": [{"type": "task", "name": "sync-crm"}, "shared-queue"]},
    {"status": ["REATTEMPTING", "FROZEN"]},
]


def sdk_query(flt: dict[str, Any], page_size: int) -> dict[str, Any]:
    """The ``runs.list`` options that ask for what the watcher's filter asks for."""
    names = {"status": "status", "task": "taskIdentifier", "tag": "tag", "version": "version"}
    query: dict[str, Any] = {"limit": page_size}
    for ours, theirs in names.items():
        if flt.get(ours):
            query[theirs] = flt[ours]
    if "queue" in flt:
        query["queue"] = [
            q if isinstance(q, dict) else {"type": "custom", "name": q} for q in flt["queue"]
        ]
    query["period"] = flt.get("period", "1d")
    if "is_test" in flt:
        query["isTest"] = flt["is_test"]
    return query


# The 3.x SDK has no queue filter: that filter is compared with the 4.x SDK only.
LIST_CASES = [
    pytest.param(version, flt, id=f"{version}-{','.join(flt) or 'none'}")
    for version in SDKS
    for flt in FILTERS
    if not ("queue" in flt and version == "legacy")
]


@pytest.mark.parametrize(("version", "flt"), LIST_CASES)
async def test_list_requests_and_pages_are_the_sdks(
    node: str, version: TriggerApiVersion, flt: dict[str, Any]
) -> None:
    world = World()
    start = datetime.now(UTC) - timedelta(hours=28.5)
    for index in range(11):
        task = "send-invoice" if index % 2 else "sync-crm"
        run_id = f"run_{index:02d}"
        world.add_trigger_run(
            run_id,
            task,
            "QUEUED",
            tags=["prod"] if index % 3 else [],
            created_at=start + timedelta(hours=3 * index),
        )
        world.set_trigger_run(run_id, ["EXECUTING", "COMPLETED", "FAILED"][index % 3], "boom")
    world.trigger_runs["run_04"].queue = "shared-queue"
    world.trigger_runs["run_05"].move(
        "RETRYING_AFTER_FAILURE", "boom", world.trigger_runs["run_05"].updated_at
    )
    config = TriggerRunsFilter.model_validate(flt)
    legal = set(flt.get("status", [])) <= (
        TRIGGER_CURRENT_STATUSES if HEADER[version] else TRIGGER_LEGACY_STATUSES
    )
    page_size = 3
    async with simulator(world) as url:
        mark = len(world.seen)
        results = await trigger_sdk(
            node,
            SDKS[version],
            url,
            world.trigger_key,
            [{"op": "list", "query": sdk_query(flt, page_size)}],
        )
        theirs = requests_since(world, mark)
        mark = len(world.seen)
        async with watcher_client(url, world.trigger_key, version) as client:
            if legal:
                listing = await client.list_all(
                    config.list_filter(), Ticket(client.upstream.gate), page_size=page_size
                )
            else:
                with pytest.raises(Exception, match="400"):
                    await client.list_all(
                        config.list_filter(), Ticket(client.upstream.gate), page_size=page_size
                    )
        ours = requests_since(world, mark)

    assert [_comparable(r) for r in ours] == [_comparable(r) for r in theirs]
    if not legal:
        # Both were refused: the status belongs to the other API version.
        assert not results[0]["ok"]
        return
    (listed,) = values(results)
    assert [r.run_id for r in listing.runs] == [r["id"] for r in listed]
    assert listing.complete
    if not flt:
        assert len(listed) == 9  # the two runs created before the 1d window are left out
        assert len(theirs) == 3  # so pagination was followed
