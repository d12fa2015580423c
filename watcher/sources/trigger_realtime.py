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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx

from watcher.core.health import Problem, ProblemKind
from watcher.core.pushed import RunRow, api_time
from watcher.core.shape import ShapeCursor, ShapeResponse, parse_schema
from watcher.core.statuses import trigger_public_status
from watcher.sources.errors import ResponseShapeError, SourceError
from watcher.sources.fetch import ERROR_BODY_LIMIT
from watcher.sources.http import Upstream, classify_status, read_capped, transport_problem

__all__ = [
    "ELECTRIC_VERSION",
    "NEEDED_COLUMNS",
    "ShapeGone",
    "TriggerRealtime",
    "run_of_row",
    "skipped_columns",
]

ELECTRIC_VERSION = "1.0.0-beta.1"
"""``x-trigger-electric-version``: the SDK's; without it the server speaks the old protocol."""

NEEDED_COLUMNS = (
    "friendlyId",
    "status",
    "updatedAt",
    "createdAt",
    "taskIdentifier",
    "runTags",
    "startedAt",
    "completedAt",
    "delayUntil",
    "error",
)
"""What an alert is built from (``core/pushed.py``): a row lacking one of them is polled."""
_SKIPPED = (
    "payload",
    "payloadType",
    "output",
    "outputType",
    "metadata",
    "metadataType",
    "usageDurationMs",
    "costInCents",
    "baseCostInCents",
    "realtimeStreams",
    "ttl",
    "number",
    "isTest",
    "queuedAt",
    "expiredAt",
)
"""Everything the watcher does not read: customer data (payload, output, metadata) never
crosses, and rows stay small."""

_REWORDED_ERRORS = frozenset({"UnexpectedExitError", "TriggerApiError"})
"""Error names the provider's API rewrites on the way out (``taskRunErrorEnhancer``:
exits by signal, out-of-memory kills, deadlocks): a row with one is read from the API."""
_REWORDED_MESSAGES = frozenset({"ffmpeg was killed with signal SIGKILL", "MANUAL_OOM_KILL_ERROR"})
_MAX_STACK = 8192


def skipped_columns() -> tuple[str, ...]:
    """The columns the daemon asks the feed to leave out (``skipColumns``)."""
    return _SKIPPED


class ShapeGone(Exception):
    """409: the shape was reset; start again at offset ``-1`` with ``handle``."""

    def __init__(self, handle: str | None) -> None:
        super().__init__(f"the shape was reset (new handle {handle})")
        self.handle = handle


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
    return api_time(_moment(pg))


def _error(value: Any) -> tuple[str | None, str | None, bool]:
    """The row's ``error`` (``TaskRunError``) as the retrieve presents it
    (``createJsonErrorObject``): its message, its stack, and whether it reads alike."""
    if value is None:
        return None, None, True
    if not isinstance(value, dict):
        return None, None, False
    match value.get("type"):
        case "BUILT_IN_ERROR":
            name, message, stack = value.get("name"), value.get("message"), value.get("stackTrace")
            if not isinstance(message, str) or not isinstance(name, str):
                return None, None, False
            if name in _REWORDED_ERRORS or message in _REWORDED_MESSAGES:
                return None, None, False
            text = f"{name}: {message}" if name and name != "Error" else message
            return (
                text or None,
                stack[:_MAX_STACK] if isinstance(stack, str) and stack else None,
                True,
            )
        case "STRING_ERROR" | "CUSTOM_ERROR":
            raw = value.get("raw")
            return (raw or None, None, True) if isinstance(raw, str) else (None, None, False)
        case _:
            return None, None, False  # INTERNAL_ERROR (reworded by code), or a new type


def run_of_row(row: Mapping[str, Any]) -> RunRow | None:
    """The run a row (or a partial update merged into one) describes; None without an id
    or a status."""
    run_id, internal = row.get("friendlyId"), row.get("status")
    if not isinstance(run_id, str) or not isinstance(internal, str):
        return None
    tags = row.get("runTags")
    task = row.get("taskIdentifier")
    message, stack, readable = _error(row.get("error"))
    attempt, version = row.get("attemptNumber"), row.get("taskVersion")
    return RunRow(
        run_id=run_id,
        status=sys.intern(trigger_public_status(internal)),
        internal=sys.intern(internal),
        updated_at=_iso(row.get("updatedAt")),
        task=sys.intern(task) if isinstance(task, str) else None,
        # The API lists a run's tags sorted.
        tags=tuple(sorted(sys.intern(t) for t in tags if isinstance(t, str)))
        if isinstance(tags, list)
        else (),
        created_at=_moment(row.get("createdAt")),
        started_at=_iso(row.get("startedAt")),
        finished_at=_iso(row.get("completedAt")),
        delayed_until=_moment(row.get("delayUntil")),
        error_message=message,
        error_stack=stack,
        error_readable=readable,
        complete=all(column in row for column in NEEDED_COLUMNS),
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        version=sys.intern(version) if isinstance(version, str) and version else None,
    )


class TriggerRealtime:
    """Reads the environment's shape of runs created in the last ``window``."""

    def __init__(self, upstream: Upstream, *, long_poll: float = 20.0) -> None:
        self.upstream = upstream
        self.long_poll = long_poll
        """How long the server may hold a live request (Electric's default is 20 s)."""

    async def read(
        self,
        cursor: ShapeCursor,
        *,
        live: bool,
        window: str | None,
        run_id: str | None = None,
        tags: Sequence[str] = (),
    ) -> ShapeResponse:
        """One request of ``GET /realtime/v1/runs`` (the runs created in ``window``, with
        every one of ``tags``), or of ``/realtime/v1/runs/{run_id}``, from ``cursor``."""
        path = "/realtime/v1/runs" if run_id is None else f"/realtime/v1/runs/{run_id}"
        what = f"GET {path}"
        params = {"offset": cursor.offset, "log": "full", "skipColumns": ",".join(_SKIPPED)}
        if window is not None and run_id is None:
            params["createdAt"] = window
        if tags:
            params["tags"] = ",".join(tags)
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
