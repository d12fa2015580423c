"""aiohttp under the upstreams, both ways in (httpx's transport seam for streams, the
fetcher for polls): answers read as httpcore's would, and every way a server can fail
reads as the httpx error that says what happened."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from watcher.clock import SystemClock
from watcher.core.budget import BudgetPolicy
from watcher.core.health import ProblemKind
from watcher.sources import transport as transport_module
from watcher.sources.errors import SourceError
from watcher.sources.fetch import Reply
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.http import HttpLimits, Upstream, build_client, build_pool
from watcher.sources.transport import AiohttpFetcher, AiohttpPool, AiohttpTransport

pytestmark = pytest.mark.anyio

Serve = Callable[[SocketStream], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only, as the daemon does


@asynccontextmanager
async def server(serve: Serve, heads: list[bytes] | None = None) -> AsyncIterator[str]:
    """A TCP server on loopback that answers each connection with ``serve`` (the request
    heads it read go to ``heads``)."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            head = await stream.receive(65536)
            if heads is not None:
                heads.append(head)
            await serve(stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


def pool(read: float = 5.0) -> AiohttpPool:
    return AiohttpPool({"x-api-key": "k"}, 2, connect_timeout=2, read_timeout=read)


class Way:
    """One way in to the pool, as a GET that returns (status, headers, body)."""

    def __init__(self, name: str, url: str, read: float) -> None:
        self.name = name
        self.pool = pool(read)
        self.url = url
        self.client = httpx.AsyncClient(
            base_url=url,
            transport=AiohttpTransport(self.pool),
            timeout=httpx.Timeout(read, connect=2),
        )
        self.fetcher = AiohttpFetcher(self.pool, url)

    async def get(
        self, path: str, params: Mapping[str, str] | None = None, max_body: int = 1 << 20
    ) -> Reply:
        if self.name == "fetcher":
            return await self.fetcher.get(path, params, max_body)
        response = await self.client.get(path, params=params)
        return Reply(response.status_code, response.headers, response.content)

    async def __aenter__(self) -> Way:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


@pytest.fixture(params=["httpx", "fetcher"])
def way(request: pytest.FixtureRequest) -> Callable[..., Way]:
    def make(url: str, read: float = 5.0) -> Way:
        return Way(request.param, url, read)

    return make


async def test_an_answer_reads_as_with_httpcore(way: Callable[..., Way]) -> None:
    heads: list[bytes] = []

    async def ok(stream: SocketStream) -> None:
        body = b'{"status": "running"}'
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nx-ratelimit-remaining: 7\r\n\r\n"
        await stream.send(head.encode() + body)

    async with server(ok, heads) as url, way(url + "/v1") as http:
        reply = await http.get("/tasks/runs/trun_1", params={"filter[status]": "a,b"})
    assert reply.status == 200
    assert reply.body == b'{"status": "running"}'
    assert reply.headers["x-ratelimit-remaining"] == "7"
    request_line, _, rest = heads[0].partition(b"\r\n")
    method, target, version = request_line.decode().split(" ")
    path, _, query = target.partition("?")
    assert (method, path, version) == ("GET", "/v1/tasks/runs/trun_1", "HTTP/1.1")
    assert parse_qs(query) == {"filter[status]": ["a,b"]}
    assert b"x-api-key: k" in rest.lower()


async def test_a_server_that_hangs_up_is_a_protocol_error_not_a_timeout(
    way: Callable[..., Way],
) -> None:
    async def hang_up(stream: SocketStream) -> None:
        return

    async with server(hang_up) as url, way(url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")


async def test_a_body_cut_short_is_a_protocol_error(way: Callable[..., Way]) -> None:
    async def cut(stream: SocketStream) -> None:
        await stream.send(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"par')

    async with server(cut) as url, way(url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/")


async def test_a_silent_server_is_a_read_timeout(way: Callable[..., Way]) -> None:
    async def silent(stream: SocketStream) -> None:
        await anyio.sleep(10)

    async with server(silent) as url, way(url, read=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/")


async def test_a_refused_connection_is_a_connect_error(way: Callable[..., Way]) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    async with way(f"http://127.0.0.1:{port}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/")


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
async def test_the_fetcher_reads_at_most_the_limit(length: bool) -> None:
    async def big(stream: SocketStream) -> None:
        body = b"x" * 5000
        if length:
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + body)
        else:
            chunk = b"1388\r\n" + body + b"\r\n0\r\n\r\n"
            await stream.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk)

    async with server(big) as url, Way("fetcher", url, 5.0) as http:
        cut = await http.get("/", max_body=1000)
        whole = await http.get("/", max_body=5000)
    assert (len(cut.body), cut.complete) == (1000, False)
    assert (len(whole.body), whole.complete) == (5000, True)


async def test_an_error_answer_is_read_up_to_the_error_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport_module, "ERROR_BODY_LIMIT", 10)

    async def error(stream: SocketStream) -> None:
        await stream.send(b"HTTP/1.1 500 Oops\r\ncontent-length: 40\r\n\r\n" + b"e" * 40)

    async with server(error) as url, Way("fetcher", url, 5.0) as http:
        reply = await http.get("/", max_body=1 << 20)
    assert (reply.status, reply.body, reply.complete) == (500, b"e" * 10, False)


async def test_one_pool_serves_polls_and_streams() -> None:
    async def ok(stream: SocketStream) -> None:
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")

    limits = HttpLimits(connect_timeout=2, read_timeout=2, total_timeout=5, max_connections=1)
    async with server(ok) as url:
        client, fetcher = build_pool(url, {"x-api-key": "k"}, limits)
        async with client:
            assert (await fetcher.get("/a", None, 100)).body == b"{}"
            assert (await client.get("/b")).json() == {}
            assert isinstance(fetcher, AiohttpFetcher)
            session = fetcher.pool.session
        assert session.closed


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


def test_a_path_is_joined_to_the_base_url_as_httpx_joins_it() -> None:
    for base in ("https://api.example.com/v1/", "https://api.example.com/v1"):
        fetcher = AiohttpFetcher(pool(), base)
        expected = httpx.AsyncClient(base_url=base).build_request("GET", "/tasks/runs/a").url
        assert str(fetcher.url("/tasks/runs/a")) == str(expected)


async def test_a_poll_that_drips_past_its_total_deadline_is_cut_and_counted() -> None:
    async def drip(stream: SocketStream) -> None:
        await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        for _ in range(100):  # a byte every 50 ms: the read timeout never trips
            await stream.send(b" ")
            await anyio.sleep(0.05)

    limits = HttpLimits(connect_timeout=2, read_timeout=1, total_timeout=0.4, max_connections=1)
    seen: list[tuple[str, str]] = []
    async with server(drip) as url:
        client, fetcher = build_pool(url, {"x-api-key": "k"}, limits)
        gate = SourceGate(
            "parallel", BudgetPolicy(rate=10.0, burst=5), max_concurrency=1, clock=SystemClock()
        )
        upstream = Upstream("parallel", client, gate, limits, fetcher=fetcher)
        upstream.observer = lambda name, outcome, seconds: seen.append((name, outcome))
        async with client:
            with pytest.raises(SourceError) as caught:
                await upstream.get_body("/v1/tasks/runs/r", {}, Ticket(gate))
    assert caught.value.problem.kind is ProblemKind.UNREACHABLE
    assert caught.value.problem.message == "GET /v1/tasks/runs/r: no complete response within 0.4s"
    assert seen == [("parallel", "timeout")]
