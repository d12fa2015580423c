"""The single I/O seam towards one upstream API: requests, timeouts, classification.

Every request spends from the source's budget, runs under its concurrency cap and
a total deadline (httpx's timeouts are per operation: a slow drip of bytes would
never trip them), reads at most ``max_body`` bytes, and ends either in parsed
JSON or in a :class:`~watcher.sources.errors.SourceError` whose problem the core
understands.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

import anyio
import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from watcher.core.health import Problem, ProblemKind
from watcher.core.scrubbing import Scrubber
from watcher.sources.errors import ResponseShapeError, SourceError
from watcher.sources.fetch import ERROR_BODY_LIMIT, ClientFetcher, Fetcher, Reply, read_upto
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.ratelimit import rate_counters, retry_after

__all__ = [
    "FollowEnd",
    "HttpLimits",
    "RequestObserver",
    "StreamFollower",
    "StreamRead",
    "Upstream",
    "build_client",
    "build_pool",
    "classify_status",
    "read_capped",
    "transport_problem",
]

RequestObserver = Callable[[str, str, float], None]
"""Called after each request with (upstream, outcome, seconds); the outcome is the
HTTP status code, ``timeout`` or ``error`` (no response)."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Timeouts (seconds) and size caps for one upstream."""

    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    total_timeout: float = 30.0
    stream_timeout: float = 60.0
    stream_idle_timeout: float = 5.0
    max_body: int = 8 * 1024 * 1024
    max_connections: int = 10


def build_client(
    base_url: str,
    headers: Mapping[str, str],
    limits: HttpLimits,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """One shared client per upstream: keep-alive pool, timeouts, fixed headers; on
    aiohttp (``sources/transport.py``) unless the caller brings its own transport."""
    return build_pool(base_url, headers, limits, transport=transport)[0]


def build_pool(
    base_url: str,
    headers: Mapping[str, str],
    limits: HttpLimits,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[httpx.AsyncClient, Fetcher]:
    """An upstream's connection pool, as an httpx client (for streams) and the poll seam
    on the same connections. Closing the client closes the pool."""
    fetcher: Fetcher | None = None
    if transport is None:
        from watcher.sources.transport import AiohttpFetcher, AiohttpPool, AiohttpTransport

        pool = AiohttpPool(
            headers,
            limits.max_connections,
            connect_timeout=limits.connect_timeout,
            read_timeout=limits.read_timeout,
        )
        transport = AiohttpTransport(pool)
        fetcher = AiohttpFetcher(pool, base_url)
    client = httpx.AsyncClient(
        base_url=base_url,
        headers=dict(headers),
        timeout=httpx.Timeout(
            limits.read_timeout, connect=limits.connect_timeout, pool=limits.total_timeout
        ),
        limits=httpx.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_connections,
        ),
        follow_redirects=False,
        transport=transport,
        trust_env=False,
    )
    # The APIs are keyed, not sessioned: keeping the cookies a CDN sets was a cookie-jar
    # pass over every response (6% of a poll's CPU in bench/ceiling.py's profile).
    client.cookies.extract_cookies = _keep_no_cookies  # type: ignore[method-assign]
    return client, fetcher or ClientFetcher(client)


def _keep_no_cookies(response: httpx.Response) -> None:
    return None


@dataclass(slots=True)
class StreamRead:
    """What one read of a finite SSE stream produced.

    ``problem`` is set when the stream broke after ``events`` were read: those
    are complete events and safe to use; the rest is read again from the cursor.
    """

    events: list[ServerSentEvent] = field(default_factory=list)
    truncated: bool = False
    problem: Problem | None = None


def _upstream_message(body: bytes) -> str | None:
    """The error text an API put in its error body (Parallel, Trigger.dev, problem+json)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    for candidate in (error, payload.get("detail"), payload.get("title"), payload.get("message")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()[:200]
    return None


def classify_status(status: int, what: str, body: bytes, wait: float | None) -> Problem:
    """Turn a non-200 answer into a problem the core understands."""
    message = f"HTTP {status} from {what}"
    detail = _upstream_message(body)
    if detail:
        message += f": {detail}"
    if status in (401, 403):
        return Problem(ProblemKind.AUTH_FAILED, message, status)
    if status == 404:
        return Problem(ProblemKind.NOT_FOUND, message, status)
    if status == 429:
        return Problem(ProblemKind.RATE_LIMITED, message, status, retry_after=wait)
    if status in (408, 409) or status >= 500:
        return Problem(ProblemKind.UNREACHABLE, message, status, retry_after=wait)
    return Problem(ProblemKind.BAD_REQUEST, message, status)


def transport_problem(exc: Exception, what: str, total: float) -> Problem:
    """A request that got no answer (timeout, refused, reset) as a problem."""
    match exc:
        case TimeoutError():
            text = f"no complete response within {total:g}s"
        case httpx.ConnectTimeout():
            text = "connect timed out"
        case httpx.TimeoutException():
            text = "timed out waiting for data"
        case httpx.ConnectError():
            text = f"connection failed ({exc})"
        case httpx.RemoteProtocolError():
            text = f"connection closed mid-response ({exc})"
        case httpx.HTTPError():
            text = f"{type(exc).__name__} ({exc})"
        case _:
            text = type(exc).__name__
    return Problem(ProblemKind.UNREACHABLE, f"{what}: {text}")


_CREDENTIAL_HEADERS = ("authorization", "x-api-key")


def _credentials(headers: Mapping[str, str]) -> list[str]:
    """The secret header values a client sends, bare tokens too."""
    values = [headers.get(name) or "" for name in _CREDENTIAL_HEADERS]
    return [part for value in values for part in (value, value.split(" ", 1)[-1])]


class Measure:
    """One request's outcome and time, for :attr:`Upstream.observer`. A class, not a
    generator context manager: it wraps every poll."""

    __slots__ = ("_started", "_upstream", "outcome")

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self.outcome = "error"
        self._started = 0.0

    def __enter__(self) -> Measure:
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        timed_out = kind is not None and issubclass(kind, (TimeoutError, httpx.TimeoutException))
        if timed_out and self.outcome == "error":
            self.outcome = "timeout"
        observer = self._upstream.observer
        if observer is not None:
            observer(self._upstream.name, self.outcome, time.perf_counter() - self._started)


class Upstream:
    """Requests to one API through its shared client and gate; polls through ``fetcher``
    (by default the client's own)."""

    def __init__(
        self,
        name: str,
        client: httpx.AsyncClient,
        gate: SourceGate,
        limits: HttpLimits,
        *,
        fetcher: Fetcher | None = None,
        epoch: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.client = client
        self.fetcher = fetcher or ClientFetcher(client)
        self.gate = gate
        self.limits = limits
        self._epoch = epoch
        self.responses: dict[int, int] = {}
        self.observer: RequestObserver | None = None
        self._scrubber = Scrubber()
        self._scrubber.add(_credentials(client.headers))

    def scrub(self, text: str) -> str:
        """``text`` without this API's credentials: an error body may echo the key sent
        (``Invalid API key <key>``), and problems are shown by the CLI, the HTTP API and
        notifications, not only logs."""
        return self._scrubber.text(text)

    def measured(self) -> Measure:
        """Time a request (``with upstream.measured() as m``); the caller sets
        ``m.outcome`` to what it got."""
        return Measure(self)

    def _observe(self, status: int, headers: Mapping[str, str]) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1
        counters = rate_counters(headers, self._epoch())
        if counters.remaining is not None:
            self.gate.observe(remaining=counters.remaining, reset_in=counters.reset_in)

    def _fail(self, reply: Reply, what: str) -> SourceError:
        wait = None
        if reply.status in (429, 503):
            wait = retry_after(reply.headers, reply.body, self._epoch())
        if reply.status == 429:
            # The SDK's own rule: wait for the reset, plus up to a second of jitter upstream.
            self.gate.block(wait if wait is not None else 1.0)
        problem = classify_status(reply.status, what, reply.body, wait)
        return SourceError(replace(problem, message=self.scrub(problem.message)))

    async def get_body(self, path: str, params: Mapping[str, str], ticket: Ticket) -> bytes:
        """GET ``path`` and return the body of its 200 answer."""
        what = f"GET {path}"
        await ticket.spend()
        async with self.gate.slot:
            try:
                with self.measured() as measure:
                    # anyio.fail_after's scope, without its two generator context
                    # managers (4% of a poll's CPU).
                    deadline = anyio.current_time() + self.limits.total_timeout
                    with anyio.CancelScope(deadline=deadline) as scope:
                        reply = await self.fetcher.get(path, params, self.limits.max_body)
                        measure.outcome = str(reply.status)
                    if scope.cancelled_caught:
                        raise TimeoutError
            except (TimeoutError, httpx.HTTPError) as exc:
                raise SourceError(transport_problem(exc, what, self.limits.total_timeout)) from None
        self._observe(reply.status, reply.headers)
        if reply.status != 200:
            raise self._fail(reply, what)
        if not reply.complete:
            raise ResponseShapeError(f"{what}: response larger than {self.limits.max_body} bytes")
        return reply.body

    @asynccontextmanager
    async def _event_stream(
        self, path: str, params: Mapping[str, str], phases: httpx.Timeout, measure: Measure
    ) -> AsyncIterator[httpx.Response]:
        """Open an SSE response (``phases``: httpx's per-phase timeouts); anything but a
        200 raises the classified :class:`SourceError`."""
        async with self.client.stream(
            "GET", path, params=params, headers={"accept": "text/event-stream"}, timeout=phases
        ) as response:
            measure.outcome = str(response.status_code)
            self._observe(response.status_code, response.headers)
            if response.status_code != 200:
                body, _ = await read_upto(response.aiter_bytes(), ERROR_BODY_LIMIT)
                reply = Reply(response.status_code, response.headers, body)
                raise self._fail(reply, f"GET {path}")
            yield response

    async def read_stream(
        self,
        path: str,
        params: Mapping[str, str],
        ticket: Ticket,
        *,
        max_events: int,
        enough: Callable[[ServerSentEvent], bool] = lambda _: False,
    ) -> StreamRead:
        """Read an SSE stream until it ends, ``enough(event)`` says so, or ``max_events``.

        A stream that stays open with nothing more to say ends the read after
        ``stream_idle_timeout`` without a new byte.
        """
        what = f"GET {path}"
        result = StreamRead()
        await ticket.spend()
        timeout = httpx.Timeout(
            self.limits.stream_idle_timeout,
            connect=self.limits.connect_timeout,
            pool=self.limits.total_timeout,
        )
        async with self.gate.limiter:
            try:
                with self.measured() as measure, anyio.fail_after(self.limits.stream_timeout):
                    async with self._event_stream(path, params, timeout, measure) as response:
                        events = EventSource(response).aiter_sse()
                        try:
                            while True:
                                # An idle deadline per event, whatever the transport does.
                                with anyio.fail_after(self.limits.stream_idle_timeout):
                                    sse = await anext(events, None)
                                if sse is None:
                                    break
                                result.events.append(sse)
                                if enough(sse):
                                    break
                                if (
                                    len(result.events) >= max_events
                                    or response.num_bytes_downloaded > self.limits.max_body
                                ):
                                    result.truncated = True
                                    break
                        finally:
                            with anyio.CancelScope(shield=True):
                                await events.aclose()
            except SourceError:
                raise
            except SSEError as exc:
                raise ResponseShapeError(f"{what}: not an event stream ({exc})") from None
            except (TimeoutError, httpx.HTTPError) as exc:
                problem = transport_problem(exc, what, self.limits.stream_timeout)
                if not result.events:
                    raise SourceError(problem) from None
                result.problem = problem
        return result

    async def follow(
        self,
        path: str,
        params: Mapping[str, str],
        ticket: Ticket,
        follower: StreamFollower,
        *,
        idle_timeout: float,
        max_age: float,
    ) -> FollowEnd:
        """Hold an SSE stream open and feed ``follower`` until it ends (see :class:`FollowEnd`).

        Unlike :meth:`read_stream` this does not take a slot of the source's
        concurrency cap (streams have their own cap, the number of stream workers),
        only a request from its budget. A refused stream (any status but 200) raises
        :class:`SourceError` like a poll; a stream that breaks later returns the
        problem with the count of events delivered before it.
        """
        what = f"GET {path}"
        end = FollowEnd()
        await ticket.spend()
        timeout = httpx.Timeout(
            idle_timeout, connect=self.limits.connect_timeout, pool=self.limits.connect_timeout
        )
        try:
            with self.measured() as measure, anyio.move_on_after(max_age) as aged:
                async with self._event_stream(path, params, timeout, measure) as response:
                    await _pump(EventSource(response), follower, end, idle_timeout)
            if aged.cancelled_caught:
                end.reason = "expired"
        except SourceError:
            raise
        except SSEError as exc:
            raise ResponseShapeError(f"{what}: not an event stream ({exc})") from None
        except (TimeoutError, httpx.HTTPError) as exc:
            problem = transport_problem(exc, what, idle_timeout)
            if not end.events:
                raise SourceError(problem) from None
            end.reason, end.problem = "broken", problem
        return end


class StreamFollower(Protocol):
    """What :meth:`Upstream.follow` feeds: each event, and a word when it goes quiet."""

    @property
    def quiet_after(self) -> float | None:
        """Call :meth:`quiet` after this many seconds without an event (None: never)."""

    async def event(self, sse: ServerSentEvent) -> bool:
        """Take one event; True ends the stream."""

    async def quiet(self) -> None:
        """No event for ``quiet_after`` seconds."""


@dataclass(slots=True)
class FollowEnd:
    """How a followed stream ended: ``closed`` by the server, ``idle`` (no byte for the
    idle timeout), ``stopped`` by the follower, ``expired`` (the connection's age cap),
    or ``broken`` (``problem`` says how)."""

    events: int = 0
    reason: str = "closed"
    problem: Problem | None = None


async def _pump(
    source: EventSource, follower: StreamFollower, end: FollowEnd, idle_timeout: float
) -> None:
    """Read events in a child task, hand them to ``follower`` here, with timers.

    A timeout must never cancel the SSE parser mid-read (it would close the
    generator), so the reader task only reads, into a small bounded buffer, and
    the timers run on this side of it.
    """
    send, receive = anyio.create_memory_object_stream[ServerSentEvent](64)
    failure: list[BaseException] = []

    async def reader() -> None:
        async with send:
            try:
                async with aclosing(source.aiter_sse()) as events:
                    async for sse in events:
                        await send.send(sse)
            except (httpx.HTTPError, SSEError) as exc:
                failure.append(exc)

    async with anyio.create_task_group() as tg, receive:
        tg.start_soon(reader)
        last = anyio.current_time()
        while True:
            idle_left = last + idle_timeout - anyio.current_time()
            quiet = follower.quiet_after
            wait = idle_left if quiet is None else min(idle_left, quiet)
            sse = None
            with anyio.move_on_after(max(wait, 0.0)):
                try:
                    sse = await receive.receive()
                except anyio.EndOfStream:
                    break
            if sse is None:
                if quiet is not None and quiet < idle_left:
                    await follower.quiet()
                    continue
                end.reason = "idle"
                break
            last = anyio.current_time()
            end.events += 1
            if await follower.event(sse):
                end.reason = "stopped"
                break
        tg.cancel_scope.cancel()
    if failure:
        raise failure[0]


async def read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    """The body; beyond ``limit`` bytes a :class:`ResponseShapeError`."""
    body, complete = await read_upto(response.aiter_bytes(), limit)
    if not complete:
        raise ResponseShapeError(f"{what}: response larger than {limit} bytes")
    return body
