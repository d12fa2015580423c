"""The upstream clients over httpx.MockTransport: requests sent, answers classified."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import pytest

from watcher.clock import SystemClock
from watcher.core.budget import BudgetPolicy
from watcher.core.health import ProblemKind
from watcher.sources.errors import SourceError
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.http import HttpLimits, Upstream, build_client
from watcher.sources.parallel import ParallelClient
from watcher.sources.trigger import ListFilter, TriggerClient

pytestmark = pytest.mark.anyio

RUN = {
    "run_id": "trun_a",
    "status": "running",
    "is_active": True,
    "processor": "core",
    "created_at": "c",
    "modified_at": "m",
}
Handler = Callable[[httpx.Request], httpx.Response]


def gate() -> SourceGate:
    return SourceGate(
        "test", BudgetPolicy(rate=1000, burst=1000), max_concurrency=4, clock=SystemClock()
    )


def parallel(
    handler: Handler, limits: HttpLimits | None = None, prefix: str = "/v1"
) -> ParallelClient:
    limits = limits or HttpLimits(total_timeout=2.0, stream_timeout=2.0)
    client = build_client(
        "http://sim", {"x-api-key": "pk"}, limits, transport=httpx.MockTransport(handler)
    )
    return ParallelClient(Upstream("parallel", client, gate(), limits), prefix=prefix)


def trigger(handler: Handler) -> TriggerClient:
    limits = HttpLimits(total_timeout=2.0)
    headers = {"authorization": "Bearer tr_dev_x", "x-trigger-api-version": "2025-07-16"}
    client = build_client("http://sim", headers, limits, transport=httpx.MockTransport(handler))
    return TriggerClient(Upstream("trigger", client, gate(), limits))


def ticket(client: ParallelClient | TriggerClient) -> Ticket:
    return Ticket(client.upstream.gate)


async def problem_of(coro: object) -> SourceError:
    with pytest.raises(SourceError) as info:
        await coro  # type: ignore[misc]
    return info.value


async def test_parallel_request_shape_and_prefix() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=RUN)

    for prefix in ("/v1", "/v1beta"):
        client = parallel(handler, prefix=prefix)
        snap = await client.get_run("trun_a", ticket(client))
        assert snap.status == "running"
    assert [r.url.path for r in seen] == ["/v1/tasks/runs/trun_a", "/v1beta/tasks/runs/trun_a"]
    assert seen[0].headers["x-api-key"] == "pk"


async def test_trigger_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={"id": "run_a", "status": "EXECUTING", "taskIdentifier": "t", "updatedAt": "u"},
        )

    client = trigger(handler)
    await client.get_run("run_a", ticket(client))
    assert seen[0].url.path == "/api/v3/runs/run_a"
    assert seen[0].headers["authorization"] == "Bearer tr_dev_x"
    assert seen[0].headers["x-trigger-api-version"] == "2025-07-16"


async def test_ids_cannot_change_the_path() -> None:
    client = parallel(lambda r: httpx.Response(200, json=RUN))
    with pytest.raises(ValueError, match="invalid id"):
        await client.get_run("../groups/x", ticket(client))


@pytest.mark.parametrize(
    ("status", "body", "kind", "needle"),
    [
        (
            401,
            {
                "type": "error",
                "error": {"ref_id": "r", "message": "Unauthorized: invalid or missing credentials"},
            },
            ProblemKind.AUTH_FAILED,
            "Unauthorized",
        ),
        (403, {"error": "forbidden"}, ProblemKind.AUTH_FAILED, "forbidden"),
        (
            404,
            {"type": "error", "error": {"ref_id": "r", "message": "Run id not found"}},
            ProblemKind.NOT_FOUND,
            "Run id not found",
        ),
        (500, {"detail": "kaput"}, ProblemKind.UNREACHABLE, "kaput"),
        (
            422,
            {"type": "error", "error": {"ref_id": "r", "message": "Request validation error"}},
            ProblemKind.BAD_REQUEST,
            "validation",
        ),
    ],
)
async def test_http_errors_are_classified_and_named(
    status: int, body: object, kind: ProblemKind, needle: str
) -> None:
    client = parallel(lambda r: httpx.Response(status, json=body))
    err = await problem_of(client.get_run("trun_a", ticket(client)))
    assert err.problem.kind is kind
    assert err.problem.status_code == status
    assert f"HTTP {status} from GET /v1/tasks/runs/trun_a" in err.problem.message
    assert needle in err.problem.message
    assert "pk" not in err.problem.message


async def test_429_honours_retry_after_and_blocks_the_gate() -> None:
    client = parallel(
        lambda r: httpx.Response(429, headers={"retry-after": "12"}, json={"error": "slow down"})
    )
    err = await problem_of(client.get_run("trun_a", ticket(client)))
    assert err.problem.kind is ProblemKind.RATE_LIMITED
    assert err.problem.retry_after == 12.0
    assert client.upstream.gate.wait_time() > 11.0
    assert client.upstream.gate.rate_limited == 1


async def test_trigger_429_with_only_reset_header() -> None:
    import time

    reset_ms = int((time.time() + 3) * 1000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429,
            headers={
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": str(reset_ms),
                "content-type": "application/problem+json",
            },
            content=json.dumps({"title": "Rate Limit Exceeded", "secondsUntilReset": 3}).encode(),
        )

    client = trigger(handler)
    err = await problem_of(client.get_run("run_a", ticket(client)))
    assert err.problem.retry_after == pytest.approx(3.0, abs=0.5)
    assert client.upstream.gate.wait_time() > 2.0


async def test_low_remaining_slows_the_gate() -> None:
    import time

    reset_ms = int((time.time() + 5) * 1000)
    client = trigger(
        lambda r: httpx.Response(
            200,
            headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset_ms)},
            json={"id": "run_a", "status": "EXECUTING"},
        )
    )
    await client.get_run("run_a", ticket(client))
    assert client.upstream.gate.wait_time() > 4.0


@pytest.mark.parametrize(
    ("exc", "needle"),
    [
        (httpx.ReadTimeout("read timed out"), "timed out"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "connection failed"),
        (httpx.RemoteProtocolError("peer closed connection"), "closed mid-response"),
    ],
)
async def test_transport_failures_are_unreachable(exc: Exception, needle: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    client = parallel(handler)
    err = await problem_of(client.get_run("trun_a", ticket(client)))
    assert err.problem.kind is ProblemKind.UNREACHABLE
    assert needle in err.problem.message
    assert "GET /v1/tasks/runs/trun_a" in err.problem.message


async def test_malformed_and_oversized_bodies() -> None:
    client = parallel(lambda r: httpx.Response(200, content=b'{"run_id": "x", '))
    err = await problem_of(client.get_run("trun_a", ticket(client)))
    assert err.problem.kind is ProblemKind.BAD_RESPONSE
    assert "malformed JSON" in err.problem.message
    small = HttpLimits(total_timeout=2.0, max_body=100)
    client = parallel(lambda r: httpx.Response(200, json={**RUN, "pad": "x" * 500}), small)
    err = await problem_of(client.get_run("trun_a", ticket(client)))
    assert "larger than 100 bytes" in err.problem.message


def sse(events: list[tuple[str, dict[str, object]]]) -> bytes:
    return b"".join(f"id: {i}\ndata: {json.dumps(d)}\n\n".encode() for i, d in events)


def failed(run_id: str, eid: str) -> tuple[str, dict[str, object]]:
    run = {
        **RUN,
        "run_id": run_id,
        "status": "failed",
        "is_active": False,
        "error": {"ref_id": "r", "message": f"{run_id} broke"},
    }
    return eid, {"type": "task_run.state", "event_id": eid, "run": run}


async def test_failed_runs_stream_with_cursor() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            content=sse([failed("trun_b", "ev_2"), failed("trun_c", "ev_3")]),
        )

    client = parallel(handler)
    read = await client.failed_runs("tgrp_1", "ev_1", ticket(client))
    assert [r.run_id for r in read.runs] == ["trun_b", "trun_c"]
    assert read.runs[0].error_message == "trun_b broke"
    assert read.cursor == "ev_3"
    assert read.complete
    assert seen[0].url.path == "/v1/tasks/groups/tgrp_1/runs"
    assert seen[0].url.params["status"] == "failed"
    assert seen[0].url.params["last_event_id"] == "ev_1"


class _BreakingStream(httpx.AsyncByteStream):
    def __init__(self, good: bytes) -> None:
        self.good = good

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.good
        yield b'id: ev_9\ndata: {"type": "task_run.st'
        raise httpx.ReadError("connection reset")


async def test_stream_broken_mid_event_keeps_complete_events_and_cursor() -> None:
    good = sse([failed("trun_b", "ev_2")])
    client = parallel(
        lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_BreakingStream(good)
        )
    )
    read = await client.failed_runs("tgrp_1", None, ticket(client))
    assert [r.run_id for r in read.runs] == ["trun_b"]
    assert read.cursor == "ev_2"
    assert not read.complete


class _OpenStream(httpx.AsyncByteStream):
    """Sends its events, then keeps the connection open without a word."""

    def __init__(self, good: bytes) -> None:
        self.good = good

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.good
        await anyio.sleep(3600)


async def test_a_stream_left_open_ends_once_the_expected_failures_are_read() -> None:
    good = sse([failed("trun_b", "ev_2"), failed("trun_c", "ev_3")])
    client = parallel(
        lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_OpenStream(good)
        )
    )
    with anyio.fail_after(1.0):
        read = await client.failed_runs("tgrp_1", None, ticket(client), expect=2)
    assert [r.run_id for r in read.runs] == ["trun_b", "trun_c"]
    assert read.cursor == "ev_3"


async def test_a_stream_left_open_with_fewer_failures_ends_at_the_idle_timeout() -> None:
    good = sse([failed("trun_b", "ev_2")])
    limits = HttpLimits(total_timeout=5.0, stream_timeout=5.0, stream_idle_timeout=0.3)
    client = parallel(
        lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_OpenStream(good)
        ),
        limits,
    )
    with anyio.fail_after(2.0):
        read = await client.failed_runs("tgrp_1", None, ticket(client), expect=5)
    assert [r.run_id for r in read.runs] == ["trun_b"]
    assert not read.complete


async def test_stream_broken_before_any_event_is_an_error() -> None:
    client = parallel(
        lambda r: httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_BreakingStream(b"")
        )
    )
    err = await problem_of(client.failed_runs("tgrp_1", None, ticket(client)))
    assert err.problem.kind is ProblemKind.UNREACHABLE


async def test_trigger_list_pages_through_the_window_up_to_the_cap() -> None:
    pages = {
        None: (["run_5", "run_4"], "run_4"),
        "run_4": (["run_3", "run_2"], "run_2"),
        "run_2": (["run_1"], None),
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        ids, nxt = pages[request.url.params.get("page[after]")]
        return httpx.Response(
            200,
            json={
                "data": [{"id": i, "status": "FAILED"} for i in ids],
                "pagination": {"next": nxt} if nxt else {},
            },
        )

    client = trigger(handler)
    flt = ListFilter(status=["FAILED", "CRASHED"], task=["send-invoice"], tag=["prod"], period="1d")
    result = await client.list_all(flt, ticket(client), page_size=2, max_pages=10)
    assert [r.run_id for r in result.runs] == ["run_5", "run_4", "run_3", "run_2", "run_1"]
    assert result.complete
    assert result.pages == 3
    params = seen[0].url.params
    assert params["filter[status]"] == "FAILED,CRASHED"
    assert params["filter[taskIdentifier]"] == "send-invoice"
    assert params["filter[tag]"] == "prod"
    assert params["filter[createdAt][period]"] == "1d"
    assert params["page[size]"] == "2"
    capped = await client.list_all(flt, ticket(client), page_size=2, max_pages=2)
    assert not capped.complete
    assert len(capped.runs) == 4
