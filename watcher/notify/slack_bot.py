"""A Slack bot on Slack's Web API (the official ``slack-sdk``): one message per incident,
edited in place, later events in its thread.

The first event of an incident posts its message (``chat.postMessage``); the channel
**id** and ``ts`` Slack answers with are kept in the incident refs (the state file, or
a cluster's Redis), so a restart or another replica edits the same message
(``chat.update``) when the incident is acknowledged, reminded, escalated or resolved,
and posts each later event as a reply in its thread. A message someone deleted
(``message_not_found``) is posted anew. Events outside any incident are plain posts.

Slack's answers: ``ratelimited`` (HTTP 429) waits out ``Retry-After``; a refused
token or channel (``invalid_auth``, ``not_in_channel``, ...) is warned about once and
kept for retry (it may be fixed); a message Slack refuses as malformed is not retried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from watcher.clock import Clock, SystemClock
from watcher.core.events import Event
from watcher.notify.apprise_sender import DeliveryResult
from watcher.notify.incident_refs import IncidentRefs, MemoryRefs
from watcher.notify.render import Message
from watcher.notify.slack_blocks import TEXT_MAX, incident_blocks, opened_facts, reply_text

__all__ = ["SlackBotNotifier"]

log = structlog.get_logger("watcher.notify")

_REFUSED = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "restricted_action",
        "team_access_not_granted",
    }
)
_MALFORMED = frozenset(
    {"invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text", "invalid_arguments"}
)
_REPLIED_KEPT = 200


class _Failed(Exception):
    def __init__(self, result: DeliveryResult) -> None:
        super().__init__(result.detail)
        self.result = result


class SlackBotNotifier:
    """Posts and edits incident messages through ``AsyncWebClient``."""

    incidents = True

    def __init__(
        self,
        token: str,
        *,
        channel: str,
        name: str,
        ref_id: str,
        timeout: float,
        base_url: str = "https://slack.com/api/",
        refs: IncidentRefs | None = None,
        scrub: Callable[[str], str] = str,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self._channel = channel
        self._ref_id = ref_id
        self._refs = refs or MemoryRefs()
        self._scrub = scrub
        self._clock = clock or SystemClock()
        # No retry handlers of the SDK's own: the channel retries, with the whole
        # message's backoff, and waits out Retry-After.
        self._client = AsyncWebClient(
            token=token, base_url=base_url, timeout=max(1, round(timeout)), retry_handlers=[]
        )
        self._warned = False
        self.calls = 0

    async def send(self, message: Message) -> DeliveryResult:
        """Act on each event of ``message`` in order; the first failure ends the try (a
        retry repeats nothing done: the refs say what was posted and replied)."""
        started = time.monotonic()
        plain: list[Event] = []
        try:
            for event in message.events:
                if event.incident is None:
                    plain.append(event)
                    continue
                await self._incident_event(event)
            if plain or not message.events:
                await self._plain(message, plain)
        except _Failed as failed:
            return failed.result
        self._warned = False
        return DeliveryResult(True, "SUCCESS", elapsed=time.monotonic() - started)

    # -- incidents ------------------------------------------------------------------------

    async def _incident_event(self, event: Event) -> None:
        incident = event.incident
        assert incident is not None
        ident = str(incident["id"])
        ref = await self._refs.get(self._ref_id, ident)
        if ref is None:
            ref = await self._post_incident(ident, dict(incident), opened_facts(event))
        else:
            text, blocks = incident_blocks(incident, ref.get("opened") or opened_facts(event))
            try:
                await self._call(
                    "chat_update", channel=ref["channel"], ts=ref["ts"], text=text, blocks=blocks
                )
            except _Failed as failed:
                if failed.result.status != "message_not_found":
                    raise
                log.warning(
                    "the incident's Slack message was deleted; posting a new one",
                    notifier=self.name,
                    incident=ident,
                )
                ref = await self._post_incident(
                    ident, dict(incident), ref.get("opened") or opened_facts(event)
                )
        replied = list(ref.get("replied") or ())
        if event.event_id in replied or event.event_id == ref.get("opener"):
            return  # the opening event is the message itself
        await self._call(
            "chat_postMessage", channel=ref["channel"], thread_ts=ref["ts"], text=reply_text(event)
        )
        ref["replied"] = [*replied, event.event_id][-_REPLIED_KEPT:]
        await self._refs.put(self._ref_id, ident, ref)

    async def _post_incident(
        self, ident: str, incident: dict[str, Any], facts: dict[str, Any]
    ) -> dict[str, Any]:
        text, blocks = incident_blocks(incident, facts)
        answer = await self._call(
            "chat_postMessage", channel=self._channel, text=text, blocks=blocks
        )
        ref: dict[str, Any] = {
            "channel": str(answer["channel"]),  # the id: chat.update takes no #name
            "ts": str(answer["ts"]),
            "opened": facts,
            "opener": incident.get("opened_event_id"),
            "replied": [],
        }
        await self._refs.put(self._ref_id, ident, ref)
        return ref

    async def _plain(self, message: Message, events: list[Event]) -> None:
        """Events outside any incident: one post, once (a retry finds it posted)."""
        if not events:  # test-notify: the message itself
            await self._call(
                "chat_postMessage", channel=self._channel, text=f"*{message.title}*\n{message.body}"
            )
            return
        key = "post:" + events[0].event_id
        if await self._refs.get(self._ref_id, key):
            return
        if len(events) == len(message.events):
            text = f"*{message.title}*\n{message.body}"
        else:
            text = "\n".join(reply_text(e) for e in events)
        await self._call(
            "chat_postMessage", channel=self._channel, text=text[:TEXT_MAX], mrkdwn=True
        )
        await self._refs.put(self._ref_id, key, {"posted": True})

    # -- the Web API ----------------------------------------------------------------------

    async def _call(self, method: str, **kwargs: Any) -> Any:
        self.calls += 1
        # Built from the events themselves, not the channel's scrubbed message: an error
        # an upstream echoed may hold a secret.
        if "text" in kwargs:
            kwargs["text"] = self._scrub(str(kwargs["text"]))
        if "blocks" in kwargs:
            kwargs["blocks"] = json.loads(self._scrub(json.dumps(kwargs["blocks"])))
        try:
            return await getattr(self._client, method)(**kwargs)
        except SlackApiError as exc:
            raise _Failed(self._failure(method, exc)) from None
        except (SlackClientError, OSError, TimeoutError) as exc:
            detail = self._scrub(f"{method}: {type(exc).__name__}: {exc}")[:500]
            raise _Failed(DeliveryResult(False, "ERROR", detail)) from None

    def _failure(self, method: str, exc: SlackApiError) -> DeliveryResult:
        # A SlackResponse, or (a body that is not JSON) the raw HTTP response.
        response = exc.response
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
        data = getattr(response, "data", None)
        error = data.get("error") if isinstance(data, dict) else None
        code = str(error or f"HTTP {status}")
        detail = self._scrub(f"Slack {method.replace('_', '.')}: {code}")[:500]
        if status == 429 or code == "ratelimited":
            headers = getattr(response, "headers", None) or {}
            after = _seconds(headers.get("Retry-After") or headers.get("retry-after"))
            return DeliveryResult(
                False, "ratelimited", detail, retry_after=after if after is not None else 1.0
            )
        if code == "message_not_found":
            return DeliveryResult(False, "message_not_found", detail)
        if code in _REFUSED:
            if not self._warned:
                self._warned = True
                log.warning(
                    "Slack refused the bot token or channel; messages are kept and retried",
                    notifier=self.name,
                    error=code,
                )
            return DeliveryResult(False, code, detail)
        if code in _MALFORMED:
            return DeliveryResult(False, code, detail, permanent=True)
        return DeliveryResult(False, code, detail)


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(str(value)))
    except ValueError:
        return None
