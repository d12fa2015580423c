"""aiohttp under the upstreams: one connection pool per client, two ways in.

Measured against nginx on one core (``bench/ceiling.py``), a GET through httpx on
httpcore's transport cost about 2,000 us of CPU, through httpx on aiohttp's transport
about 900 us, and through aiohttp alone about 250 us. So each upstream pool is an
aiohttp session, reached

- by polls through :class:`AiohttpFetcher` (the :class:`~watcher.sources.fetch.Fetcher`
  seam: no httpx request or response objects, about 350 us a GET), and
- by streams (SSE, realtime long polls) through :class:`AiohttpTransport`, httpx's
  transport seam, so they keep httpx's API, timeouts and the tests' ``MockTransport``.

aiohttp's errors are mapped to the httpx error that says what happened (a server that
hangs up is a protocol error, not a timeout), in the request and while the body is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp
import httpx
import yarl

from watcher.sources.fetch import ERROR_BODY_LIMIT, Reply, read_upto

__all__ = ["AiohttpFetcher", "AiohttpPool", "AiohttpTransport", "httpx_error"]


def httpx_error(exc: BaseException) -> httpx.TransportError | None:
    """The httpx error for an aiohttp one (or an httpx one that wraps it); None when
    ``exc`` is neither."""
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) else exc
    message = str(cause or exc) or type(cause or exc).__name__
    match cause:
        case aiohttp.ConnectionTimeoutError():
            return httpx.ConnectTimeout(message)
        case aiohttp.ServerTimeoutError() | TimeoutError():
            return httpx.ReadTimeout(message)
        case aiohttp.ClientConnectorError():
            return httpx.ConnectError(message)
        case aiohttp.ServerDisconnectedError() | aiohttp.ClientPayloadError():
            return httpx.RemoteProtocolError(message)
        case aiohttp.ClientError():
            return httpx.ReadError(message)
    return exc if isinstance(exc, httpx.TransportError) else None


_ERRORS = (TimeoutError, aiohttp.ClientError)


def _mapped(exc: BaseException, request: httpx.Request | None = None) -> BaseException:
    mapped = httpx_error(exc)
    if mapped is None:
        return exc
    if request is not None:
        mapped.request = request
    return mapped


class AiohttpPool:
    """One aiohttp session: a keep-alive pool of ``max_connections``, made on first use
    (a session belongs to the running event loop), with ``headers`` on every request."""

    def __init__(
        self,
        headers: Mapping[str, str],
        max_connections: int,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.headers = dict(headers)
        self.max_connections = max_connections
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session, made now if it is not yet."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=self.timeout,
                # Keyed APIs, not sessions: a cookie jar would be a pass over every answer.
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the pool's connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class AiohttpFetcher:
    """The :class:`~watcher.sources.fetch.Fetcher` seam straight on an aiohttp pool."""

    def __init__(self, pool: AiohttpPool, base_url: str) -> None:
        self.pool = pool
        self.base_url = base_url.rstrip("/")

    def url(self, path: str) -> yarl.URL:
        """``path`` on the base URL, as httpx joins them: appended to its path. (Built per
        request: about a microsecond, where a cache of one URL per watch cost 340 bytes.)"""
        return yarl.URL(f"{self.base_url}/{path.lstrip('/')}", encoded=True)

    async def get(self, path: str, params: Mapping[str, str] | None, max_body: int) -> Reply:
        """GET ``path``; aiohttp's errors raised as httpx's."""
        try:
            async with self.pool.session.request(
                "GET", self.url(path), params=params or None, allow_redirects=False
            ) as response:
                status = response.status
                limit = max_body if status == 200 else ERROR_BODY_LIMIT
                length = response.content_length
                if length is not None and length <= limit:
                    body, complete = await response.read(), True
                else:
                    body, complete = await read_upto(response.content.iter_any(), limit)
                return Reply(status, response.headers, body, complete)
        except _ERRORS as exc:
            raise _mapped(exc) from exc


class _Body(httpx.AsyncByteStream):
    """A streamed response body: aiohttp's chunks, its read errors as httpx's."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _ERRORS as exc:
            raise _mapped(exc) from exc

    async def aclose(self) -> None:
        # A body not read to its end closes its connection rather than return it.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx's transport seam on an aiohttp pool, for streamed responses."""

    def __init__(self, pool: AiohttpPool) -> None:
        self.pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` with httpx's per-phase timeouts; the body is streamed."""
        phases = request.extensions.get("timeout", {})
        try:
            response = await self.pool.session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                # httpx decodes the content-encoding it asked for.
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=phases.get("connect"),
                    sock_read=phases.get("read"),
                ),
            )
        except _ERRORS as exc:
            raise _mapped(exc, request) from exc
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        """Close the pool."""
        await self.pool.aclose()
