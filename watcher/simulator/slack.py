"""A fake of Slack's Web API for a bot (``auth.test``, ``chat.postMessage``,
``chat.update``), under ``/slack/api``.

Shaped from Slack's method reference: every answer is HTTP 200 with ``"ok"`` true or
false and an ``error`` code (``invalid_auth``, ``channel_not_found``,
``message_not_found``, ``invalid_blocks``, ``msg_too_long``), except rate limiting:
HTTP 429 with ``Retry-After``. ``chat.postMessage`` takes a channel id or ``#name``
and answers with the id; ``chat.update`` takes only the id. Block Kit limits are
checked: 50 blocks, a header's 150 characters of plain text, a section's 3,000.

Controls for tests: ``GET /slack/_state``; ``POST /slack/_delete`` with
``{"channel", "ts"}`` (someone deleted the message); ``POST /slack/_fail`` with
``{"error": "ratelimited", "retry_after": 1, "times": 1}``.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any
from urllib.parse import parse_qs

from watcher.http_server import Request, Response, json_response

__all__ = ["SlackFake", "check_blocks"]

_MAX_BLOCKS, _HEADER, _SECTION, _TEXT = 50, 150, 3000, 40_000


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def check_blocks(blocks: Any) -> str | None:
    """Why Slack would refuse ``blocks`` (``invalid_blocks``), or None."""
    if not isinstance(blocks, list) or len(blocks) > _MAX_BLOCKS:
        return f"blocks must be a list of at most {_MAX_BLOCKS}"
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or "type" not in block:
            return f"blocks[{i}] has no type"
        text = block.get("text")
        kind = block["type"]
        if kind == "header":
            if not isinstance(text, dict) or text.get("type") != "plain_text":
                return f"blocks[{i}]: a header's text must be plain_text"
            if not 1 <= len(str(text.get("text", ""))) <= _HEADER:
                return f"blocks[{i}]: a header's text must be 1 to {_HEADER} characters"
        elif kind == "section":
            if not isinstance(text, dict) or text.get("type") not in ("mrkdwn", "plain_text"):
                return f"blocks[{i}]: a section needs text"
            if not 1 <= len(str(text.get("text", ""))) <= _SECTION:
                return f"blocks[{i}]: a section's text must be 1 to {_SECTION} characters"
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                return f"blocks[{i}]: a context needs 1 to 10 elements"
        elif kind not in ("divider", "actions", "image", "rich_text"):
            return f"blocks[{i}]: unknown block type {kind!r}"
    return None


class SlackFake:
    """One workspace: its bot tokens, channels, and the messages posted and edited."""

    def __init__(
        self, tokens: set[str] | None = None, channels: dict[str, str] | None = None
    ) -> None:
        self.tokens = tokens if tokens is not None else {"xoxb-sim-token"}
        self.channels = channels if channels is not None else {"incidents": "C0SIMINC01"}
        """Channel name -> id."""
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        """(channel id, ts) -> the message: text, blocks, thread_ts, edits."""
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[tuple[str, str]] = []
        self.failures: deque[dict[str, Any]] = deque()
        self._ts = itertools.count(1)

    async def handle(self, request: Request, parts: list[str]) -> Response:
        """``/slack/...``."""
        if parts == ["_state"]:
            return json_response(200, _dumps(self.state()))
        if parts == ["_delete"] and request.method == "POST":
            data = json.loads(request.body or b"{}")
            self.messages.pop((str(data.get("channel")), str(data.get("ts"))), None)
            return json_response(200, b'{"ok":true}')
        if parts == ["_fail"] and request.method == "POST":
            data = json.loads(request.body or b"{}")
            self.failures.extend([data] * int(data.get("times", 1)))
            return json_response(200, b'{"ok":true}')
        if len(parts) != 2 or parts[0] != "api":
            return json_response(404, b'{"ok":false,"error":"unknown_method"}')
        return self._method(parts[1], request)

    def _answer(self, method: str, payload: dict[str, Any]) -> Response:
        if not payload.get("ok"):
            self.refused.append((method, str(payload.get("error"))))
        return json_response(200, _dumps(payload))

    def _method(self, method: str, request: Request) -> Response:
        args = _arguments(request)
        if args is None:
            return self._answer(method, {"ok": False, "error": "invalid_json"})
        self.calls.append((method, args))
        if self.failures:
            failure = self.failures.popleft()
            error = str(failure.get("error", "internal_error"))
            if error == "ratelimited":
                after = str(failure.get("retry_after", 1))
                self.refused.append((method, error))
                return Response(
                    429,
                    [("content-type", "application/json"), ("retry-after", after)],
                    b'{"ok":false,"error":"ratelimited"}',
                )
            return self._answer(method, {"ok": False, "error": error})
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            return self._answer(method, {"ok": False, "error": "invalid_auth"})
        match method:
            case "auth.test":
                return self._answer(
                    method, {"ok": True, "team": "sim", "user": "run-watcher", "bot_id": "B0SIM"}
                )
            case "chat.postMessage":
                return self._post(args)
            case "chat.update":
                return self._update(args)
        return self._answer(method, {"ok": False, "error": "unknown_method"})

    def _content_problem(self, args: dict[str, Any]) -> str | None:
        text, blocks = args.get("text"), args.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if not text and not blocks:
            return "no_text"
        if text is not None and len(str(text)) > _TEXT:
            return "msg_too_long"
        if blocks is not None and check_blocks(blocks) is not None:
            return "invalid_blocks"
        return None

    def _post(self, args: dict[str, Any]) -> Response:
        channel = str(args.get("channel") or "")
        found = self.channels.get(channel.removeprefix("#")) if channel.startswith("#") else channel
        if found is None or found not in self.channels.values():
            return self._answer("chat.postMessage", {"ok": False, "error": "channel_not_found"})
        ident: str = found
        if problem := self._content_problem(args):
            return self._answer("chat.postMessage", {"ok": False, "error": problem})
        thread = args.get("thread_ts")
        if thread is not None and (ident, str(thread)) not in self.messages:
            return self._answer("chat.postMessage", {"ok": False, "error": "thread_not_found"})
        ts = f"1765000000.{next(self._ts):06d}"
        message: dict[str, Any] = {
            "text": args.get("text"),
            "blocks": args.get("blocks"),
            "thread_ts": thread,
            "edits": 0,
            "history": [],
        }
        self.messages[(ident, ts)] = message
        return self._answer(
            "chat.postMessage",
            {
                "ok": True,
                "channel": ident,
                "ts": ts,
                "message": {"text": args.get("text"), "ts": ts},
            },
        )

    def _update(self, args: dict[str, Any]) -> Response:
        ident, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        if ident not in self.channels.values():
            return self._answer("chat.update", {"ok": False, "error": "channel_not_found"})
        message = self.messages.get((ident, ts))
        if message is None:
            return self._answer("chat.update", {"ok": False, "error": "message_not_found"})
        if problem := self._content_problem(args):
            return self._answer("chat.update", {"ok": False, "error": problem})
        message["history"].append(message["text"])
        message.update(text=args.get("text"), blocks=args.get("blocks"))
        message["edits"] += 1
        return self._answer(
            "chat.update", {"ok": True, "channel": ident, "ts": ts, "text": args.get("text")}
        )

    def top_level(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The messages that are not thread replies."""
        return {k: m for k, m in self.messages.items() if m["thread_ts"] is None}

    def replies(self, ts: str) -> list[dict[str, Any]]:
        """The replies in the thread of ``ts``, in order."""
        return [m for (_, t), m in sorted(self.messages.items()) if m["thread_ts"] == ts]

    def state(self) -> dict[str, Any]:
        """What it holds, for tests and ``/slack/_state``."""
        return {
            "messages": [
                {"channel": c, "ts": t, **m} for (c, t), m in sorted(self.messages.items())
            ],
            "calls": [m for m, _ in self.calls],
            "refused": [{"method": m, "error": e} for m, e in self.refused],
        }


def _arguments(request: Request) -> dict[str, Any] | None:
    """The method's arguments: a JSON body (slack-sdk's for chat.*) or a form."""
    kind = request.headers.get("content-type", "")
    if "json" in kind:
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    form = parse_qs(request.body.decode(errors="replace"))
    return {k: v[0] for k, v in form.items()} | {k: v[0] for k, v in request.query.items()}
