"""How the simulator misbehaves on purpose, built from the plain server's parts.

The shared HTTP server knows nothing of faults: a hang is a handler that never
returns, a reset is a streamed body that breaks off after promising more, a drip is a
streamed body that sends a byte at a time.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import anyio

from watcher.http_server import Response

__all__ = ["BrokenBody", "dripping", "hang", "reset_mid_body"]


class BrokenBody(Exception):
    """Raised inside a streamed body: the server hangs up mid-message."""


async def hang() -> Response:
    """Never answer (the caller's timeout must end the wait)."""
    await anyio.sleep(math.inf)
    raise AssertionError("unreachable")  # pragma: no cover


def reset_mid_body(body: bytes, sent: int, promised: int) -> Response:
    """A 200 that promises ``promised`` bytes, sends ``sent`` of ``body``, hangs up."""

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:sent]
        raise BrokenBody

    return Response(
        200,
        [("content-type", "application/json"), ("content-length", str(promised))],
        stream=chunks(),
    )


def dripping(body: bytes, every: float) -> Response:
    """A 200 whose body arrives a byte every ``every`` seconds."""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(len(body)):
            yield body[i : i + 1]
            await anyio.sleep(every)

    return Response(
        200,
        [("content-type", "application/json"), ("content-length", str(len(body)))],
        stream=chunks(),
    )
