"""aiohttp's transport under httpx: answers read as httpcore's would, and every way a
server can fail reads as the httpx error that says what happened."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from watcher.clock import SystemClock
from watcher.core.budget import BudgetPolicy
from watcher.sources import http as http_module
from watcher.sources.gate import SourceGate
from watcher.sources.http import HttpLimits, Upstream, build_client
from watcher.sources.transport import aiohttp_transport

pytestmark = pytest.mark.anyio

Serve = Callable[[SocketStream], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only, as the daemon does


@asynccontextmanager
async def server(serve: Serve) -> AsyncIterator[str]:
    """A TCP server on loopback that answers each connection with ``serve``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            await stream.receive(65536)  # the request head
            await serve(stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


def client(url: str, read: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, transport=aiohttp_transport(2), timeout=httpx.Timeout(read, connect=2)
    )


async def test_an_answer_reads_as_with_httpcore() -> None:
    async def ok(stream: SocketStream) -> None:
        body = b'{"status": "running"}'
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nx-ratelimit-remaining: 7\r\n\r\n"
        await stream.send(head.encode() + body)

    async with server(ok) as url, client(url) as http:
        response = await http.get("/v1/tasks/runs/trun_1", params={"filter[status]": "a,b"})
    assert response.status_code == 200
    assert response.json() == {"status": "running"}
    assert response.headers["x-ratelimit-remaining"] == "7"
    assert response.request.url.params["filter[status]"] == "a,b"


async def test_a_server_that_hangs_up_is_a_protocol_error_not_a_timeout() -> None:
    async def hang_up(stream: SocketStream) -> None:
        return

    async with server(hang_up) as url, client(url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")


async def test_a_body_cut_short_is_a_protocol_error() -> None:
    async def cut(stream: SocketStream) -> None:
        await stream.send(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"par')

    async with server(cut) as url, client(url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")


async def test_a_silent_server_is_a_read_timeout() -> None:
    async def silent(stream: SocketStream) -> None:
        await anyio.sleep(10)

    async with server(silent) as url, client(url, read=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/")


async def test_a_refused_connection_is_a_connect_error() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    async with client(f"http://127.0.0.1:{port}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/")


async def test_the_upstream_client_keeps_no_cookies() -> None:
    heads: list[bytes] = []

    async def cookie(stream: SocketStream) -> None:
        while True:
            await stream.send(
                b"HTTP/1.1 200 OK\r\nset-cookie: __cf_bm=abc; Path=/\r\ncontent-length: 2\r\n\r\n{}"
            )
            try:
                heads.append(await stream.receive(65536))
            except anyio.EndOfStream:
                return

    limits = HttpLimits(connect_timeout=2, read_timeout=2, total_timeout=5, max_connections=1)
    async with server(cookie) as url:
        http = build_client(url, {"x-api-key": "k"}, limits)
        async with http:
            await http.get("/a")
            await http.get("/b")
    assert len(http.cookies) == 0
    assert heads
    assert b"cookie" not in heads[0].lower()


def test_each_path_is_parsed_once_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_module, "_URL_CACHE", 2)
    http = httpx.AsyncClient(base_url="https://api.example.com/v1/")
    upstream = Upstream(
        "parallel",
        http,
        SourceGate(
            "parallel", BudgetPolicy(rate=10.0, burst=5), max_concurrency=1, clock=SystemClock()
        ),
        HttpLimits(),
    )
    first = upstream.url("/tasks/runs/a")
    assert str(first) == "https://api.example.com/v1/tasks/runs/a"  # merged as httpx merges
    assert upstream.url("/tasks/runs/a") is first
    upstream.url("/tasks/runs/b")
    third = upstream.url("/tasks/runs/c")  # past the cap: parsed, not kept
    assert str(third) == "https://api.example.com/v1/tasks/runs/c"
    assert upstream.url("/tasks/runs/c") is not third
    assert upstream.url("/tasks/runs/b") is upstream.url("/tasks/runs/b")
