"""A real HTTP webhook receiver on loopback: records what notifiers post, with arrival times.

It can also misbehave, to prove retries and isolation: fail its first N requests,
or hang.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import anyio

from watcher.http_server import HttpServer, Request, Response, json_response
from watcher.simulator.faults import hang

__all__ = ["Received", "WebhookReceiver"]


@dataclass
class Received:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def payload(self) -> dict[str, Any]:
        """The posted JSON object (apprise ``json://``) or form fields (``form://``)."""
        ctype = self.headers.get("content-type", "")
        if "json" in ctype:
            data = json.loads(self.body)
            return data if isinstance(data, dict) else {"value": data}
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    @property
    def title(self) -> str:
        """The notification title."""
        return str(self.payload.get("title", ""))

    @property
    def message(self) -> str:
        """The notification body."""
        return str(self.payload.get("message", ""))

    @property
    def events(self) -> list[dict[str, Any]]:
        """For ``format: json`` notifiers: the event(s) carried in the body (digests unpacked)."""
        data = json.loads(self.message)
        if isinstance(data, dict) and data.get("digest") is True:
            return list(data["events"])
        return [data]


class WebhookReceiver:
    """Collects POSTs. ``fail_first`` answers the first N with ``fail_status``."""

    def __init__(
        self,
        *,
        fail_first: int = 0,
        fail_status: int = 500,
        hang: bool = False,
        port: int = 0,
        on_receive: Callable[[Received], None] | None = None,
    ) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.hang = hang
        self.on_receive = on_receive
        self.received: list[Received] = []
        self.rejected = 0
        self.server = HttpServer(self.handle, port=port)
        self._changed = anyio.Event()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        return self.server.url

    def apprise_url(self, scheme: str = "json", path: str = "/hook") -> str:
        """An apprise URL that posts here (``json://127.0.0.1:port/hook``)."""
        return f"{scheme}://{self.server.host}:{self.server.port}{path}"

    async def handle(self, request: Request) -> Response:
        """Record the request, or misbehave as configured."""
        if self.hang:
            return await hang()
        if self.fail_first > 0:
            self.fail_first -= 1
            self.rejected += 1
            self._changed.set()
            self._changed = anyio.Event()
            return json_response(self.fail_status, b'{"error": "receiver configured to fail"}')
        received = Received(request.method, request.path, dict(request.headers), request.body)
        self.received.append(received)
        if self.on_receive is not None:
            self.on_receive(received)
        self._changed.set()
        self._changed = anyio.Event()
        return json_response(200, b'{"ok": true}')

    async def wait_for(self, count: int) -> list[Received]:
        """Wait until ``count`` requests have arrived (bound it with ``anyio.fail_after``)."""
        while len(self.received) < count:
            await self._changed.wait()
        return self.received

    async def wait_rejected(self, count: int) -> None:
        """Wait until ``count`` requests have been refused (bound it with ``anyio.fail_after``)."""
        while self.rejected < count:
            await self._changed.wait()

    async def wait_until(self, predicate: Callable[[list[Received]], bool]) -> list[Received]:
        """Wait until ``predicate(received)`` holds (bound it with ``anyio.fail_after``)."""
        while not predicate(self.received):
            await self._changed.wait()
        return self.received

    def events(self) -> list[dict[str, Any]]:
        """Every event received by a ``format: json`` notifier, in arrival order."""
        return [event for r in self.received for event in r.events]
