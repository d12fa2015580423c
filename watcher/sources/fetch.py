"""The seam a poll's request goes through: GET a path, get the status, headers and body.

A poll needs no streaming response object, only the answer, so the seam is narrower
than httpx's transport: :class:`Fetcher`. In production it is
:class:`~watcher.sources.transport.AiohttpFetcher`, straight on the connection pool
(measured in ``bench/ceiling.py``: a GET through ``httpx.AsyncClient`` cost about
900 us of CPU on aiohttp's transport, this path about 350 us). :class:`ClientFetcher`
serves the same seam from any ``httpx.AsyncClient``, so the tests' ``MockTransport``
keeps working.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

__all__ = ["ERROR_BODY_LIMIT", "ClientFetcher", "Fetcher", "Reply", "read_upto"]

ERROR_BODY_LIMIT = 64 * 1024
"""Bytes read of an answer that is not a 200: enough for the error it names."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer: ``headers`` looked up by lower-case name; ``body`` at most the limit
    the fetch was given, ``complete`` False when the answer went on past it."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    complete: bool = True


class Fetcher(Protocol):
    """GETs on one API's base URL, each raising httpx's errors for a request that got
    no answer (``httpx.ConnectError``, ``httpx.ReadTimeout``, ...)."""

    async def get(self, path: str, params: Mapping[str, str] | None, max_body: int) -> Reply:
        """GET ``path``: at most ``max_body`` bytes of a 200's body, at most
        :data:`ERROR_BODY_LIMIT` of any other."""
        ...


async def read_upto(chunks: AsyncIterable[bytes], limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of ``chunks``, and whether that was all of them."""
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in chunks:
            if size + len(chunk) > limit:
                parts.append(chunk[: limit - size])
                return b"".join(parts), False
            size += len(chunk)
            parts.append(chunk)
    finally:
        # Closed at once when the limit stops the read (not whenever the GC gets to it).
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
    return b"".join(parts), True


class ClientFetcher:
    """The seam served by an ``httpx.AsyncClient`` (any transport: the tests' mocks)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def get(self, path: str, params: Mapping[str, str] | None, max_body: int) -> Reply:
        """GET ``path`` through the client."""
        # params=None, not {}: httpx re-parses the URL to merge even no params.
        async with self.client.stream("GET", path, params=params or None) as response:
            limit = max_body if response.status_code == 200 else ERROR_BODY_LIMIT
            body, complete = await read_upto(response.aiter_bytes(), limit)
            return Reply(response.status_code, response.headers, body, complete)
