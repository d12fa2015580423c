"""A small HTTP/1.1 server on anyio sockets and h11's state machine.

Three users: the daemon's own endpoints (health, metrics, the watch API), the
simulator and the webhook receiver. The server offers plain and streamed bodies;
a streamed body that raises hangs up mid-message. The simulator builds its faults
(a hang, a reset mid-body, a slow drip, a broken event stream) from those parts
(``watcher/simulator/faults.py``); the server has no fault knobs of its own. A full
framework would bring a second event-loop runtime into the daemon; h11 (the sans-I/O
protocol library under httpx, already installed) does this in a few dozen lines.
Connections are capped, every request must arrive within a deadline, and every
request body has a size cap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import h11
from anyio.abc import SocketStream, TaskStatus

__all__ = ["HttpServer", "Request", "Response", "json_response"]

_MAX_BODY = 4 * 1024 * 1024
_IDLE_TIMEOUT = 30.0


@dataclass
class Request:
    """A parsed request. ``path`` is percent-decoded; ``raw_path`` is as sent."""

    method: str
    raw_path: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    """A response: ``body``, or ``stream`` for a body sent as it is produced (a stream
    that raises hangs up mid-message)."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


def json_response(
    status: int, payload: bytes, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A JSON response."""
    return Response(status, [("content-type", "application/json"), *(headers or [])], payload)


Handler = Callable[[Request], Awaitable[Response]]


class HttpServer:
    """Serve ``handler`` on a loopback port until the surrounding task group is cancelled."""

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body: int = _MAX_BODY,
        max_connections: int = 256,
        head_timeout: float = _IDLE_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_body = max_body
        self.max_connections = max_connections
        """Connections served at once; more are closed at once (file descriptors are the
        poller's too)."""
        self.head_timeout = head_timeout
        """Each request must arrive whole within this long of its first byte being
        awaited: a client that trickles a request cannot hold a connection."""
        self.requests = 0
        self.open_connections = 0
        self.refused_connections = 0

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind, report started, and serve forever."""
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._connection)

    async def _connection(self, stream: SocketStream) -> None:
        if self.open_connections >= self.max_connections:
            self.refused_connections += 1
            await stream.aclose()
            return
        self.open_connections += 1
        try:
            await self._serve_connection(stream)
        finally:
            self.open_connections -= 1

    async def _serve_connection(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        async with stream:
            try:
                while True:
                    request: Request | Response | None = None
                    with anyio.move_on_after(self.head_timeout):
                        request = await self._read_request(stream, conn)
                    if request is None:
                        return
                    self.requests += 1
                    if isinstance(request, Response):
                        await self._send(stream, conn, request)
                        return
                    response = await self.handler(request)
                    keep = await self._send(stream, conn, response, head=request.method == "HEAD")
                    if (
                        not keep
                        or conn.our_state is not h11.DONE
                        or conn.their_state is not h11.DONE
                    ):
                        return
                    conn.start_next_cycle()
            except (
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                anyio.EndOfStream,
                h11.ProtocolError,
            ):
                return

    async def _read_request(
        self, stream: SocketStream, conn: h11.Connection
    ) -> Request | Response | None:
        """The next request; a 413 response when its body is over ``max_body``."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with anyio.move_on_after(_IDLE_TIMEOUT):
                    try:
                        data = await stream.receive(65536)
                    except anyio.EndOfStream:
                        data = b""
                    conn.receive_data(data)
                    continue
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    return json_response(
                        413,
                        b'{"error": "request body larger than %d bytes"}' % self.max_body,
                        [("connection", "close")],
                    )
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("latin-1")
                parts = urlsplit(target)
                return Request(
                    method=head.method.decode(),
                    raw_path=parts.path,
                    path=unquote(parts.path),
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.decode().lower(): v.decode("latin-1") for k, v in head.headers},
                    body=bytes(body),
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _send(
        self, stream: SocketStream, conn: h11.Connection, response: Response, *, head: bool = False
    ) -> bool:
        headers = [(k.encode(), v.encode()) for k, v in response.headers]
        names = {k.lower() for k, _ in response.headers}
        if response.stream is None and "content-length" not in names:
            headers.append((b"content-length", str(len(response.body)).encode()))
        await stream.send(conn.send(h11.Response(status_code=response.status, headers=headers)))
        if head:
            # The headers a GET would carry, no body; the connection stays usable.
            await stream.send(conn.send(h11.EndOfMessage()))
            return True
        if response.stream is not None:
            try:
                async for chunk in response.stream:
                    if chunk:
                        await stream.send(conn.send(h11.Data(data=chunk)))
            except Exception:
                # The body broke off: hang up without finishing the message.
                return False
            await stream.send(conn.send(h11.EndOfMessage()))
            return True
        if response.body:
            await stream.send(conn.send(h11.Data(data=response.body)))
        await stream.send(conn.send(h11.EndOfMessage()))
        return True
