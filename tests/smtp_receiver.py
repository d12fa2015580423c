"""A real SMTP server (aiosmtpd) on loopback, in the test's own event loop."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import anyio
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class MailBox:
    """Messages received, parsed."""

    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    changed: anyio.Event = field(default_factory=anyio.Event)

    def url(self, to: str = "oncall@example.com") -> str:
        """An apprise URL that sends here (plain SMTP, no auth)."""
        return f"mailto://127.0.0.1:{self.port}?from=watcher@example.com&to={to}"

    async def wait_until(
        self, predicate: Callable[[list[EmailMessage]], bool]
    ) -> list[EmailMessage]:
        while not predicate(self.messages):
            await self.changed.wait()
        return self.messages

    @staticmethod
    def html(message: EmailMessage) -> str:
        part = message.get_body(preferencelist=("html",))
        assert part is not None, "no HTML part"
        return str(part.get_content())

    @staticmethod
    def text(message: EmailMessage) -> str:
        part = message.get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""


class _Handler:
    def __init__(self, box: MailBox) -> None:
        self.box = box

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content: Any = envelope.content
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.box.messages.append(parsed)
        self.box.changed.set()
        self.box.changed = anyio.Event()
        return "250 OK"


@asynccontextmanager
async def smtp_server() -> AsyncIterator[MailBox]:
    """Serve SMTP on a free loopback port while the context is open."""
    box = MailBox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(_Handler(box), hostname="localhost"), "127.0.0.1", 0
    )
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()
