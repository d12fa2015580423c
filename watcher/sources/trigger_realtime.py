"""Trigger.dev's realtime API: one request of an environment's shape of runs at a time.

``GET /realtime/v1/runs`` with ElectricSQL's parameters (``offset``, ``handle``,
``live``, ``cursor``) and the headers the official SDK sends
(``x-trigger-electric-version``, the API version, the key as bearer). The realtime
endpoints are not counted by the provider's ``/api`` rate limiter, so requests here
spend nothing from the source's budget; they have their own connection pool, since a
live request is held open for up to the server's long-poll time.

A 409 (the shape was reset) raises :class:`ShapeGone` with the new handle; other
failures raise :class:`~watcher.sources.errors.SourceError` with a classified problem
(429 is the plan's limit of concurrent realtime connections).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx

from watcher.core.health import Problem, ProblemKind
from watcher.core.shape import ShapeCursor, ShapeResponse, parse_schema
from watcher.core.statuses import trigger_public_status
from watcher.sources.errors import ResponseShapeError, SourceError
from watcher.sources.fetch import ERROR_BODY_LIMIT
from watcher.sources.http import Upstream, classify_status, read_capped, transport_problem

__all__ = [
    "ELECTRIC_VERSION",
    "NEEDED_COLUMNS",
    "RealtimeRun",
    "ShapeGone",
    "TriggerRealtime",
    "run_of_row",
]

ELECTRIC_VERSION = "1.0.0-beta.1"
"""``x-trigger-electric-version``: the SDK's; without it the server speaks the old protocol."""

NEEDED_COLUMNS = ("friendlyId", "status", "updatedAt", "createdAt", "taskIdentifier", "runTags")
_SKIPPED = (
    "payload",
    "payloadType",
    "output",
    "outputType",
    "metadata",
    "metadataType",
    "error",
    "usageDurationMs",
    "costInCents",
    "baseCostInCents",
    "realtimeStreams",
    "ttl",
    "number",
    "isTest",
    "queuedAt",
    "expiredAt",
    "delayUntil",
    "startedAt",
    "completedAt",
)
"""Everything the watcher does not read: customer data (payload, output, metadata) never
crosses, and rows stay small. What a change means is read by polling the run."""


class ShapeGone(Exception):
    """409: the shape was reset; start again at offset ``-1`` with ``handle``."""

    def __init__(self, handle: str | None) -> None:
        super().__init__(f"the shape was reset (new handle {handle})")
        self.handle = handle


@dataclass(frozen=True, slots=True)
class RealtimeRun:
    """What a row says of a run: its id, status (public and internal) and times."""

    run_id: str
    status: str
    internal: str
    updated_at: str | None
    task: str | None = None
    tags: tuple[str, ...] = ()
    created_at: datetime | None = None


def _moment(pg: Any) -> datetime | None:
    """A ``timestamp(3)`` as Postgres prints it (UTC, no zone), as an aware datetime."""
    if not isinstance(pg, str) or not pg:
        return None
    try:
        return datetime.fromisoformat(pg.replace(" ", "T").removesuffix("Z")).replace(tzinfo=UTC)
    except ValueError:
        return None


def _iso(pg: Any) -> str | None:
    """A ``timestamp(3)`` in the API's form (``2026-12-02T07:00:00.120Z``), so a row and
    a retrieve name an instant alike."""
    moment = _moment(pg)
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def run_of_row(row: Mapping[str, Any]) -> RealtimeRun | None:
    """The run a row (or a partial update merged into one) describes; None without an id
    or a status."""
    run_id, internal = row.get("friendlyId"), row.get("status")
    if not isinstance(run_id, str) or not isinstance(internal, str):
        return None
    tags = row.get("runTags")
    task = row.get("taskIdentifier")
    return RealtimeRun(
        run_id=run_id,
        status=sys.intern(trigger_public_status(internal)),
        internal=sys.intern(internal),
        updated_at=_iso(row.get("updatedAt")),
        task=task if isinstance(task, str) else None,
        tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
        created_at=_moment(row.get("createdAt")),
    )


class TriggerRealtime:
    """Reads the environment's shape of runs created in the last ``window``."""

    def __init__(self, upstream: Upstream, *, long_poll: float = 20.0) -> None:
        self.upstream = upstream
        self.long_poll = long_poll
        """How long the server may hold a live request (Electric's default is 20 s)."""

    async def read(self, cursor: ShapeCursor, *, live: bool, window: str) -> ShapeResponse:
        """One request of ``GET /realtime/v1/runs`` from ``cursor``."""
        path = "/realtime/v1/runs"
        what = f"GET {path}"
        params = {
            "offset": cursor.offset,
            "log": "full",
            "createdAt": window,
            "skipColumns": ",".join(_SKIPPED),
        }
        if cursor.handle:
            params["handle"] = cursor.handle
        if live:
            params["live"] = "true"
            params["cursor"] = cursor.cursor or ""
        limits = self.upstream.limits
        # The server holds a live request open: the read deadline allows for it.
        deadline = limits.total_timeout + (self.long_poll if live else 0.0)
        timeout = httpx.Timeout(
            limits.read_timeout + (self.long_poll if live else 0.0),
            connect=limits.connect_timeout,
            pool=limits.total_timeout,
        )
        headers = {"x-trigger-electric-version": ELECTRIC_VERSION}
        upstream = self.upstream
        try:
            with upstream.measured() as measure, anyio.fail_after(deadline):
                async with upstream.client.stream(
                    "GET", path, params=params, headers=headers, timeout=timeout
                ) as response:
                    measure.outcome = str(response.status_code)
                    status = response.status_code
                    body = await read_capped(
                        response, limits.max_body if status == 200 else ERROR_BODY_LIMIT, what
                    )
        except SourceError:
            raise
        except (TimeoutError, httpx.HTTPError) as exc:
            raise SourceError(transport_problem(exc, what, deadline)) from None
        if status == 409:
            raise ShapeGone(response.headers.get("electric-handle"))
        if status not in (200, 204):
            problem = classify_status(status, what, body, None)
            raise SourceError(Problem(problem.kind, upstream.scrub(problem.message), status))
        return _parse(response.headers, body if status == 200 else b"[]", what)


def _parse(headers: httpx.Headers, body: bytes, what: str) -> ShapeResponse:
    try:
        messages = json.loads(body)
    except ValueError as exc:
        raise ResponseShapeError(f"{what}: malformed JSON ({exc})") from None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ResponseShapeError(f"{what}: not a list of shape messages")
    handle, offset = headers.get("electric-handle"), headers.get("electric-offset")
    if not handle or not offset:
        raise SourceError(
            Problem(
                ProblemKind.BAD_RESPONSE,
                f"{what}: no electric-handle or electric-offset header "
                "(is x-trigger-electric-version passed through?)",
            )
        )
    return ShapeResponse(
        messages,
        handle=handle,
        offset=offset,
        cursor=headers.get("electric-cursor"),
        up_to_date="electric-up-to-date" in headers,
        schema=parse_schema(headers.get("electric-schema")),
    )
