"""The transport under the upstreams' httpx clients: aiohttp's, through ``httpx-aiohttp``.

Measured against nginx on one core (``bench/ceiling.py``), a request through httpx on
httpcore's transport cost about 2,000 us of CPU, on aiohttp's (``httpx-aiohttp``) about
1,000 us, and through aiohttp alone about 300 us. The daemon keeps httpx's API (its
timeouts, its ``MockTransport`` in the tests, its exceptions) and takes aiohttp's
transport under it. ``httpx-aiohttp`` maps aiohttp's errors loosely (a server that
hangs up reads as a connect timeout; some errors pass through unmapped), so each is
mapped here to the httpx error that says what happened, in the request and while the
body is read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["aiohttp_transport", "httpx_error"]


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


class _Body(httpx.AsyncByteStream):
    """A response body whose read errors are httpx's."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (TimeoutError, httpx.HTTPError, aiohttp.ClientError) as exc:
            mapped = httpx_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Transport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (TimeoutError, httpx.HTTPError, aiohttp.ClientError) as exc:
            mapped = httpx_error(exc)
            if mapped is None:
                raise
            mapped.request = request
            raise mapped from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Body(response.stream)
        return response


def aiohttp_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """aiohttp's transport with a pool of ``max_connections`` kept-alive connections."""
    return _Transport(
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        trust_env=False,
    )
