"""Trigger.dev's realtime API as its server serves it: ElectricSQL shapes of ``TaskRun``.

``GET /realtime/v1/runs/{id}`` follows one run, ``GET /realtime/v1/runs`` every run of
the environment created in a window (``createdAt``, default and cap one day, fixed
when the shape is made), optionally only those with all of ``tags``. The protocol is
Electric's (read from the provider's ``realtimeClient.server.ts`` and
``@electric-sql/client``):

- ``offset=-1`` makes (or reads) the shape: every matching row as an ``insert``, in
  chunks of ``chunk`` rows (each a non-live request from the last offset), then
  ``up-to-date``; headers ``electric-handle``, ``electric-offset``, ``electric-schema``.
- ``handle=H&offset=O`` reads the shape's log after ``O``; with ``live=true`` it waits
  (a long poll, at most ``long_poll`` seconds) until something changes, answering
  ``electric-cursor`` too. An ``update`` carries only the columns that changed.
- An unknown or reset handle answers 409 with ``must-refetch`` and the new handle.
- Live requests beyond ``limit`` at once answer 429 (the plan's connection limit).
- A multi-run shape holds at most ``cap`` runs and says nothing of the rest (the
  provider's newer backend logs it on its own side only).

Values are Postgres text, typed by ``electric-schema``: ``t``/``f``, numbers, JSON,
``{a,b}`` arrays, timestamps without a zone. Rows carry the internal status; for a
client without the current ``x-trigger-api-version`` the server rewrites ``DEQUEUED``
to ``EXECUTING`` in the body, as the provider does. Without
``x-trigger-electric-version`` (an old client) the handle and offset headers take
their old names.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from watcher.http_server import Request, Response, json_response
from watcher.simulator.trigger_runs import TRun, is_current
from watcher.simulator.world import World

__all__ = ["COLUMNS", "RealtimeServer", "pg_timestamp"]

# DEFAULT_ELECTRIC_COLUMNS of the provider's realtime client, with their Postgres types.
COLUMNS: dict[str, dict[str, Any]] = {
    "id": {"type": "text", "not_null": True, "pk_index": 0},
    "taskIdentifier": {"type": "text", "not_null": True},
    "createdAt": {"type": "timestamp", "not_null": True},
    "updatedAt": {"type": "timestamp", "not_null": True},
    "startedAt": {"type": "timestamp"},
    "delayUntil": {"type": "timestamp"},
    "queuedAt": {"type": "timestamp"},
    "expiredAt": {"type": "timestamp"},
    "completedAt": {"type": "timestamp"},
    "friendlyId": {"type": "text", "not_null": True},
    "number": {"type": "int4", "not_null": True},
    "isTest": {"type": "bool", "not_null": True},
    "status": {"type": "TaskRunStatus", "not_null": True},
    "usageDurationMs": {"type": "int4", "not_null": True},
    "costInCents": {"type": "float8", "not_null": True},
    "baseCostInCents": {"type": "float8", "not_null": True},
    "ttl": {"type": "text"},
    "payload": {"type": "text", "not_null": True},
    "payloadType": {"type": "text", "not_null": True},
    "metadata": {"type": "text"},
    "metadataType": {"type": "text", "not_null": True},
    "output": {"type": "text"},
    "outputType": {"type": "text", "not_null": True},
    "runTags": {"type": "text", "dims": 1},
    "error": {"type": "jsonb"},
    "realtimeStreams": {"type": "text", "dims": 1},
}
_RESERVED = frozenset({"id", "taskIdentifier", "friendlyId", "status", "createdAt"})
_UP_TO_DATE = {"headers": {"control": "up-to-date"}}
_MAX_WINDOW = timedelta(days=1)


def pg_timestamp(iso: str | None) -> str | None:
    """An RFC 3339 time as Postgres prints a ``timestamp(3)``: no zone, a space, and
    no trailing zeros in the fraction (``2026-12-02 07:00:00.12``)."""
    if iso is None:
        return None
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    millis = moment.microsecond // 1000
    return text + (f".{millis:03d}".rstrip("0") if millis else "")


def _pg_array(values: list[str]) -> str:
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _row(run: TRun, number: int) -> dict[str, str | None]:
    """Every column of the run, as Postgres text."""
    error = None
    if run.error:
        error = json.dumps(
            {
                "type": "BUILT_IN_ERROR",
                "name": "Error",
                "message": run.error,
                "stackTrace": f"Error: {run.error}\n    at run (src/trigger/{run.task}.ts:12:11)",
            }
        )
    return {
        "id": f"cm{run.id.removeprefix('run_')}",
        "taskIdentifier": run.task,
        "createdAt": pg_timestamp(run.created_at),
        "updatedAt": pg_timestamp(run.updated_at),
        "startedAt": pg_timestamp(run.started_at),
        "delayUntil": pg_timestamp(run.delayed_until),
        "queuedAt": pg_timestamp(run.created_at),
        "expiredAt": None,
        "completedAt": pg_timestamp(run.finished_at),
        "friendlyId": run.id,
        "number": str(number),
        "isTest": "t" if run.is_test else "f",
        "status": run.state,
        "usageDurationMs": "0",
        "costInCents": "0",
        "baseCostInCents": "0",
        "ttl": None,
        "payload": json.dumps({"customer_email": "jane@example.com"}),
        "payloadType": "application/json",
        "metadata": None,
        "metadataType": "application/json",
        "output": (
            json.dumps({"invoice": "INV-SECRET-OUTPUT"})
            if run.state == "COMPLETED_SUCCESSFULLY"
            else None
        ),
        "outputType": "application/json",
        "runTags": _pg_array(sorted(run.tags)),
        "error": error,
        "realtimeStreams": "{}",
    }


def _window(text: str | None) -> timedelta:
    """``createdAt``: ``30s``, ``5m``, ``2h``, ``1d``, ``1w``; default and cap a day."""
    match = re.fullmatch(r"(\d+)\s*([smhdw])", (text or "").strip())
    if match is None:
        return _MAX_WINDOW
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2]]
    return min(_MAX_WINDOW, timedelta(seconds=int(match[1]) * seconds))


@dataclass(eq=False)
class _Shape:
    """One shape: which runs it holds, what it last sent of each, and its log."""

    handle: str
    definition: tuple[Any, ...]
    run_id: str | None
    tags: frozenset[str]
    since: datetime | None
    cap: int | None
    log: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, dict[str, str | None]] = field(default_factory=dict)
    changed: anyio.Event = field(default_factory=anyio.Event)
    gone: bool = False

    def matches(self, run: TRun) -> bool:
        if self.run_id is not None:
            return run.id == self.run_id
        if not self.tags <= set(run.tags):
            return False
        created = datetime.fromisoformat(run.created_at.replace("Z", "+00:00"))
        return self.since is None or created > self.since

    def observe(self, run: TRun, row: dict[str, str | None]) -> None:
        """A run changed: log an insert, or an update of the columns that changed."""
        held = self.rows.get(run.id)
        if held is None:
            if not self.matches(run) or (self.cap is not None and len(self.rows) >= self.cap):
                return
            self.rows[run.id] = row
            self.log.append(_change("insert", row, row))
        else:
            diff = {k: v for k, v in row.items() if held.get(k) != v}
            if not diff:
                return
            held.update(diff)
            self.log.append(_change("update", row, {"id": row["id"], **diff}))
        self.changed.set()
        self.changed = anyio.Event()


def _change(operation: str, row: dict[str, str | None], value: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": f'"public"."TaskRun"/"{row["id"]}"',
        "value": value,
        "headers": {"operation": operation, "relation": ["public", "TaskRun"]},
    }


class RealtimeServer:
    """The realtime endpoints over a :class:`World`'s Trigger.dev runs."""

    def __init__(
        self,
        world: World,
        *,
        limit: int = 50,
        cap: int = 1000,
        long_poll: float = 20.0,
        chunk: int = 10_000,
    ) -> None:
        self.world = world
        self.chunk = chunk
        """Rows per snapshot response (Electric splits large snapshots too)."""
        self.limit = limit
        """Live requests at once (the plan's concurrent realtime connections)."""
        self.cap = cap
        """Runs a multi-run shape holds at most."""
        self.long_poll = long_poll
        self.live = 0
        self.shapes: dict[str, _Shape] = {}
        self._by_definition: dict[tuple[Any, ...], _Shape] = {}
        self._numbers: dict[str, int] = {}
        self._seq = itertools.count(1)
        world.trigger_listeners.append(self._changed)

    def reset(self) -> None:
        """Drop every shape: waiting and later requests with an old handle get 409."""
        for shape in self.shapes.values():
            shape.gone = True
            shape.changed.set()
        self.shapes.clear()
        self._by_definition.clear()

    def _number(self, run: TRun) -> int:
        return self._numbers.setdefault(run.id, len(self._numbers) + 1)

    def _changed(self, run: TRun) -> None:
        row = _row(run, self._number(run))
        for shape in self.shapes.values():
            shape.observe(run, row)

    def _shape(self, definition: tuple[Any, ...]) -> _Shape:
        shape = self._by_definition.get(definition)
        if shape is not None:
            return shape
        kind, run_id, tags, window = definition
        since = None if kind == "run" else self.world.now() - _window(window)
        shape = _Shape(
            handle=f"{next(self._seq)}-{int(time.time() * 1000)}",
            definition=definition,
            run_id=run_id,
            tags=frozenset(tags),
            since=since,
            cap=None if kind == "run" else self.cap,
        )
        runs = sorted(self.world.trigger_runs.values(), key=lambda r: r.created_at, reverse=True)
        for run in runs:
            shape.observe(run, _row(run, self._number(run)))
        shape.log.clear()  # the snapshot is the rows; the log starts after it
        self.shapes[shape.handle] = shape
        self._by_definition[definition] = shape
        return shape

    async def handle(self, request: Request, parts: list[str]) -> Response:
        """``/realtime/v1/runs[/{id}]`` (``parts`` after ``realtime``)."""
        if request.headers.get("authorization") != f"Bearer {self.world.trigger_key}":
            self.world.count("trigger.realtime_unauthorized")
            return json_response(401, b'{"error":"Invalid or Missing API key"}')
        match parts:
            case ["v1", "runs", run_id]:
                definition: tuple[Any, ...] = ("run", run_id, (), None)
            case ["v1", "runs"]:
                tags = tuple(sorted(t for t in (request.param("tags") or "").split(",") if t))
                definition = ("runs", None, tags, request.param("createdAt"))
            case _:
                return json_response(404, b'{"error":"Not found"}')
        modern = "x-trigger-electric-version" in request.headers
        handle = request.param("handle") if modern else request.param("shape_id")
        offset = request.param("offset") or "-1"
        live = request.param("live") == "true"
        columns = self._columns(request.param("skipColumns"))
        if offset == "-1":
            self.world.count("trigger.realtime_snapshot")
            made = self.shapes.get(handle or "") or self._shape(definition)
            return self._snapshot(request, made, len(made.log), 0, columns, modern)
        shape = self.shapes.get(handle or "")
        if shape is None or shape.definition != definition:
            return self._must_refetch(definition, modern)
        try:
            start, chunk = (int(part) for part in offset.split("_", 1))
        except ValueError:
            return json_response(400, b'{"message":"Invalid request","errors":{"offset":"bad"}}')
        if chunk > 0 and not live:
            self.world.count("trigger.realtime_snapshot_chunk")
            return self._snapshot(request, shape, start, chunk, columns, modern)
        if not live:
            self.world.count("trigger.realtime_catch_up")
            return self._answer(request, shape, shape.log[start:], columns, modern, live=False)
        if self.live >= self.limit:
            self.world.count("trigger.realtime_limited")
            return json_response(429, b'{"error":"Too many concurrent requests"}')
        self.world.count("trigger.realtime_live")
        self.live += 1
        try:
            with anyio.move_on_after(self.long_poll):
                while len(shape.log) <= start and not shape.gone:
                    await shape.changed.wait()
        finally:
            self.live -= 1
        if shape.gone:
            return self._must_refetch(definition, modern)
        return self._answer(request, shape, shape.log[start:], columns, modern, live=True)

    def _snapshot(
        self,
        request: Request,
        shape: _Shape,
        position: int,
        chunk: int,
        columns: list[str],
        modern: bool,
    ) -> Response:
        """Chunk ``chunk`` of the shape's rows, as Electric splits a large snapshot: the
        offset ``P_C`` asks for chunk ``C`` of the snapshot taken at log position ``P``;
        the last chunk ends up to date at ``P_0``, where the log takes over. (Later chunks
        show rows as they are now; replaying the log from ``P`` re-applies the same
        changes, which merging makes harmless.)"""
        rows = list(shape.rows.values())[chunk * self.chunk : (chunk + 1) * self.chunk]
        last = (chunk + 1) * self.chunk >= len(shape.rows)
        offset = f"{position}_0" if last else f"{position}_{chunk + 1}"
        return self._answer(
            request, shape, rows, columns, modern, live=False, offset=offset, up_to_date=last
        )

    def _must_refetch(self, definition: tuple[Any, ...], modern: bool) -> Response:
        """409: the shape is gone; the client starts again at ``-1`` with the new handle."""
        self.world.count("trigger.realtime_reset")
        fresh = self._shape(definition)
        return Response(
            409,
            [
                ("content-type", "application/json"),
                (_header("electric-handle", modern), fresh.handle),
            ],
            b'[{"headers":{"control":"must-refetch"}}]',
        )

    def _columns(self, skip: str | None) -> list[str]:
        skipped = {c for c in (skip or "").split(",") if c} - _RESERVED
        return [c for c in COLUMNS if c not in skipped]

    def _answer(
        self,
        request: Request,
        shape: _Shape,
        entries: Any,
        columns: list[str],
        modern: bool,
        *,
        live: bool,
        offset: str | None = None,
        up_to_date: bool = True,
    ) -> Response:
        messages: list[dict[str, Any]] = []
        for entry in entries:
            if "headers" in entry and "key" in entry:
                value = {k: v for k, v in entry["value"].items() if k in columns}
                messages.append({**entry, "value": value})
            else:  # a snapshot row
                messages.append(_change("insert", entry, {k: entry[k] for k in columns}))
        if up_to_date:
            messages.append(_UP_TO_DATE)
        body = json.dumps(messages, separators=(",", ":"))
        if not is_current(request.headers.get("x-trigger-api-version")):
            body = body.replace('"status":"DEQUEUED"', '"status":"EXECUTING"')
        headers = [
            ("content-type", "application/json"),
            (_header("electric-handle", modern), shape.handle),
            (_header("electric-offset", modern), offset or f"{len(shape.log)}_0"),
        ]
        if up_to_date:
            headers.append(("electric-up-to-date", ""))
        if live:
            headers.append(("electric-cursor", str(int(time.time() / 20))))
        else:
            schema = {c: COLUMNS[c] for c in columns}
            headers.append(("electric-schema", json.dumps(schema, separators=(",", ":"))))
        return Response(200, headers, body.encode())


def _header(name: str, modern: bool) -> str:
    """An old client (no ``x-trigger-electric-version``) reads the old header names."""
    if modern:
        return name
    return {
        "electric-handle": "electric-shape-id",
        "electric-offset": "electric-chunk-last-offset",
    }[name]
