"""The small HTTP server behind the daemon's endpoints: HEAD, bounds, slow clients."""

from __future__ import annotations

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from watcher.daemon.api_errors import Rejected, json_object
from watcher.http_server import HttpServer, Request, Response, json_response

pytestmark = pytest.mark.anyio


async def hello(request: Request) -> Response:
    return json_response(200, b'{"hello": "world"}')


async def test_head_has_the_headers_of_get_no_body_and_keeps_the_connection() -> None:
    server = HttpServer(hello)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        async with httpx.AsyncClient(base_url=server.url) as client:
            head = await client.head("/")
            get = await client.get("/")
            again = await client.head("/")
        tg.cancel_scope.cancel()
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == "18"
    assert again.status_code == 200
    assert server.requests == 3  # one connection served all three


async def test_connections_beyond_the_cap_are_closed_and_slow_heads_time_out() -> None:
    server = HttpServer(hello, max_connections=4, head_timeout=0.3)
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        held: list[SocketStream] = []
        for _ in range(4):
            stream = await anyio.connect_tcp(server.host, server.port)
            # One whole request answered: the connection is surely open and counted ...
            await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with anyio.fail_after(5):
                assert b"200" in await stream.receive()
            # ... then a request head that never finishes.
            await stream.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            held.append(stream)
        assert server.open_connections == 4
        extra = await anyio.connect_tcp(server.host, server.port)
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await extra.receive()
        assert server.refused_connections == 1
        # The slow heads are cut off at their deadline; then the server serves again.
        with anyio.fail_after(5):
            for stream in held:
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stream.receive()
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/")).status_code == 200
        for stream in [*held, extra]:
            await stream.aclose()
        tg.cancel_scope.cancel()


def test_deeply_nested_json_is_a_400_not_a_crash() -> None:
    with pytest.raises(Rejected) as info:
        json_object(b"[" * 100_000 + b"]" * 100_000, "a watch")
    assert info.value.status == 400
    assert "nested too deeply" in info.value.problems[0]


@pytest.fixture
def anyio_backend() -> str:
    """Real sockets: a jumping mock clock would fire the timeouts while the kernel works."""
    return "asyncio"
