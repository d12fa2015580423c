"""Delivery through apprise: one ``Apprise`` object per configured notifier.

apprise sends are blocking; they run in a worker thread so the event loop never
waits on a slow SMTP server or webhook. The outcome is read per service from
apprise 2.x's ``AppriseResult``; only the private form of the URL is ever shown.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from watcher.notify.render import Message
from watcher.notify.templates import Family

__all__ = ["AppriseNotifier", "DeliveryResult", "Notifier", "url_secrets"]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one send. ``detail`` is safe to log (no secrets)."""

    ok: bool
    status: str
    detail: str = ""
    elapsed: float = 0.0
    retry_after: float | None = None
    """Seconds the receiver asked to wait before the next attempt (a 429's Retry-After)."""
    permanent: bool = False
    """The receiver refused the message itself (a 400): retrying cannot help."""


class Notifier(Protocol):
    """The port the dispatcher sends through. ``name`` is safe to log."""

    name: str

    async def send(self, message: Message) -> DeliveryResult:
        """Deliver ``message`` once (no retries)."""
        ...


_WEBHOOKS = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})


def _family(plugin: Any) -> Family:
    """The family of default message a service suits, from what apprise declares of it."""
    protocols = {str(p) for p in (plugin.protocol, plugin.secure_protocol) if p}
    for attr in ("protocol", "secure_protocol"):
        value = getattr(plugin, attr, None)
        if isinstance(value, tuple | list):
            protocols |= {str(v) for v in value}
    formats = [str(getattr(f, "value", f)) for f in plugin._formats()]
    title_max, body_max = int(plugin.title_maxlen), int(plugin.body_maxlen)
    if protocols & _WEBHOOKS:
        return "text"
    if body_max <= 1024 or (title_max == 0 and body_max <= 1600):
        return "sms"
    if formats and formats[0] == "html" and title_max > 0:
        return "email"
    if "markdown" in formats:
        return "chat"
    return "text"


def url_secrets(url: str) -> list[str]:
    """Parts of an apprise URL that may be credentials, for log scrubbing."""
    from urllib.parse import parse_qsl, urlsplit

    secrets = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return secrets
    if parts.password:
        secrets.append(parts.password)
    if parts.username and len(parts.username) >= 8:
        secrets.append(parts.username)
    candidates = [seg for seg in parts.path.split("/") if seg]
    host = parts.hostname
    if host and "." not in host and host != "localhost" and not parts.port:
        # slack://T000/B000/XXXX style: the "host" is a token, not a host.
        candidates.append(parts.netloc.rsplit("@", 1)[-1])
    candidates += [v for _, v in parse_qsl(parts.query)]
    secrets += [c for c in candidates if len(c) >= 8]
    return secrets


# apprise's debug lines that carry the underlying error; payload dumps are left out.
_REASON_DEBUG = ("socket exception", "exception:", "response details", "smtp", "refused")
_REASON_LINE = 240
_ERRNO = re.compile(r"\[Errno (-?\d+)\] ([^\"')\]]+)")


def failure_reason(entries: Iterable[Any]) -> str:
    """Why a service failed, from apprise's log of the send: its warnings and errors,
    and the debug lines that carry the underlying error (``Socket Exception: ...
    Connection refused``, the answer a webhook gave, the SMTP server's reply). The last
    three, deduplicated, each clipped."""
    lines: list[str] = []
    for entry in entries:
        text = " ".join(str(entry.message).split())
        lowered = text.lower()
        if not text or text in lines or "payload" in lowered[:40] or text.endswith("..."):
            continue  # payload dumps and progress lines say nothing about the failure
        if entry.level in ("ERROR", "WARNING") or (
            entry.level == "DEBUG" and any(word in lowered for word in _REASON_DEBUG)
        ):
            if errno := _ERRNO.search(text):
                # requests' nested exception text, reduced to what the OS said.
                text = f"{errno.group(2).strip()} (errno {errno.group(1)})"
            lines.append(text if len(text) <= _REASON_LINE else text[: _REASON_LINE - 1] + "…")
    return "; ".join(lines[-3:])


def _capture_apprise_log() -> None:
    """Let apprise's per-send log capture see everything, and print none of it.

    apprise says why a send failed (connection refused, the HTTP status a webhook
    answered, what the SMTP server refused) in its log, which it captures per send
    with a handler on its logger: the logger must pass DEBUG. Its records are not
    propagated: :func:`failure_reason` reports them, scrubbed, with each failed send.
    """
    log = logging.getLogger("apprise")
    log.setLevel(logging.DEBUG)
    log.propagate = False


class AppriseNotifier:
    """One apprise URL, sent to in a worker thread with apprise's own timeout."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        connect_timeout: float = 5.0,
        name: str | None = None,
        scrub: Callable[[str], str] = lambda s: s,
    ) -> None:
        import apprise  # heavy: keep it off the import path of commands that do not send

        from watcher.notify.apprise_plugins import load_plugins

        _capture_apprise_log()
        scheme = url.split("://", 1)[0] if "://" in url else None
        # Only the plugin this URL names; a URL it does not take then loads them all.
        load_plugins([scheme] if scheme is not None else [])
        self._timeout = timeout
        self._scrub = scrub
        asset = apprise.AppriseAsset(service_timeout=timeout, storage_mode="memory")
        self._apprise: Any = apprise.Apprise(asset=asset)
        added = self._apprise.add(url)
        if not added:
            load_plugins([])  # not taken by the plugin found for it: load every plugin
            added = self._apprise.add(url)
        if not added:
            raise ValueError(
                f"not a valid apprise URL (scheme {scheme or '?'!r} unknown or URL malformed)"
            )
        plugin: Any = self._apprise[0]
        # apprise's own socket timeouts (cto/rto), inside its service timeout: a hung
        # service gives up on the network before apprise stops waiting for it, so an
        # abandoned send does not deliver late (and twice, after our retry).
        plugin.socket_connect_timeout = min(connect_timeout, timeout * 0.5)
        plugin.socket_read_timeout = timeout * 0.8
        # apprise throttles each service on its own (5.5 s between e-mails); the
        # channel's token bucket (max_per_minute/burst) does that job here, and a
        # throttle inside a send would eat the send's timeout.
        plugin.request_rate_per_sec = 0
        self.private_url: str = plugin.url(privacy=True)
        # The private URL without its (long, default-filled) query string.
        self.name = name or self.private_url.split("?", 1)[0]
        self.family: Family = _family(plugin)
        self.title_maxlen: int = int(plugin.title_maxlen) or 0
        self.body_maxlen: int = int(plugin.body_maxlen)

    def _send_blocking(self, message: Message) -> DeliveryResult:
        started = time.monotonic()
        result = self._apprise.notify(
            body=message.body,
            title=message.title,
            notify_type=message.severity.value,
            body_format=message.body_format,
            timeout=self._timeout,
            # DEBUG: the socket or SMTP error a plugin logs under its warning.
            log_level=logging.DEBUG,
        )
        with result:
            ok = bool(result)
            notes = []
            for service in result:
                note = f"{service.name}: {service.status.name}"
                if not service and (why := failure_reason(service.logs())):
                    note += f" ({why})"
                notes.append(note)
            detail = self._scrub("; ".join(notes) or result.status.name)
            return DeliveryResult(ok, result.status.name, detail[:500], time.monotonic() - started)

    async def send(self, message: Message) -> DeliveryResult:
        """Deliver once; a hung service is abandoned after the timeout (plus grace)."""
        with anyio.move_on_after(self._timeout + 5.0):
            return await anyio.to_thread.run_sync(
                self._send_blocking, message, abandon_on_cancel=True
            )
        return DeliveryResult(
            False, "TIMEOUT", f"no answer within {self._timeout:g}s", self._timeout
        )
