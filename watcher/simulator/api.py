"""HTTP handlers of the simulator: Parallel's and Trigger.dev's GET endpoints, a control API.

Shapes follow ``../shared/reference`` and ``api-notes.md``: Parallel under
``/v1`` and the legacy ``/v1beta`` prefix (``x-api-key``), Trigger.dev under
``/api/v3/runs/{id}`` and ``/api/v1/runs`` (bearer key, ``x-trigger-api-version``,
its token-bucket limiter with ``x-ratelimit-*`` headers and problem+json 429), and its
realtime shapes under ``/realtime/v1`` (``watcher/simulator/realtime.py``); and the
notifier fakes: PagerDuty's Events API under ``/pagerduty``, Slack's Web API under
``/slack``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

import anyio

from watcher.core.statuses import trigger_statuses
from watcher.http_server import Request, Response, json_response
from watcher.simulator.faults import BrokenBody, dripping, hang, reset_mid_body
from watcher.simulator.pagerduty import PagerDutyFake
from watcher.simulator.realtime import RealtimeServer
from watcher.simulator.slack import SlackFake
from watcher.simulator.trigger_runs import is_current, public_status
from watcher.simulator.world import Fault, World

__all__ = ["SimulatorApi", "TriggerLimiter"]


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class TriggerLimiter:
    """Trigger.dev's documented limiter: 250 tokens every 10 s, at most 750."""

    def __init__(
        self,
        refill: int = 250,
        interval: float = 10.0,
        capacity: int = 750,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.refill = refill
        self.interval = interval
        self.capacity = capacity
        self.clock = clock
        self.tokens = float(capacity)
        self.window_start = clock()
        self.rejected = 0

    def _advance(self) -> float:
        now = self.clock()
        windows = math.floor((now - self.window_start) / self.interval)
        if windows > 0:
            self.tokens = min(self.capacity, self.tokens + windows * self.refill)
            self.window_start += windows * self.interval
        return now

    def take(self) -> tuple[bool, int, float]:
        """Take a token: (allowed, remaining, reset as Unix seconds)."""
        self._advance()
        reset = self.window_start + self.interval
        if self.tokens >= 1:
            self.tokens -= 1
            return True, int(self.tokens), reset
        self.rejected += 1
        return False, 0, reset


class SimulatorApi:
    """The request handler: routes, auth, faults, rate limiting."""

    def __init__(
        self,
        world: World,
        *,
        limiter: TriggerLimiter | None = None,
        realtime: RealtimeServer | None = None,
    ) -> None:
        self.world = world
        self.limiter = limiter or TriggerLimiter()
        self.realtime = realtime or RealtimeServer(world)
        self.pagerduty = PagerDutyFake()
        """PagerDuty's Events API v2, under ``/pagerduty``."""
        self.slack = SlackFake()
        """Slack's Web API for a bot, under ``/slack``."""

    async def __call__(self, request: Request) -> Response:
        """Handle one request."""
        segments = [unquote(s) for s in request.raw_path.split("/") if s]
        if segments[:1] == ["_sim"]:
            return await self._control(request, segments[1:])
        # Notifier fakes: not the upstreams, so not counted, faulted or rate-limited here.
        if segments[:1] == ["pagerduty"]:
            return await self.pagerduty.handle(request, segments[1:])
        if segments[:1] == ["slack"]:
            return await self.slack.handle(request, segments[1:])
        self.world.seen.append((request.method, request.path, request.query, request.headers))
        fault = self.world.take_fault(request.path)
        if fault is not None and (faulted := await self._fault(fault)) is not None:
            return faulted
        if segments[:1] in (["v1"], ["v1beta"]):
            return await self._parallel(request, segments[1:])
        if segments[:1] == ["api"]:
            return self._trigger(request, segments[1:])
        if segments[:1] == ["realtime"]:
            # Not counted by the /api limiter, as on the provider's side.
            return await self.realtime.handle(request, segments[1:])
        return json_response(404, _dumps({"error": "Not found"}))

    def _count(self, name: str) -> None:
        self.world.count(name)

    async def _fault(self, fault: Fault) -> Response | None:
        self._count(f"fault.{fault.kind}")
        match fault.kind:
            case "status":
                body = (
                    fault.body
                    if fault.body is not None
                    else _dumps({"error": f"simulated {fault.status}"})
                )
                return json_response(fault.status, body, list(fault.headers))
            case "hang":
                return await hang()
            case "malformed":
                return json_response(200, b'{"taskgroup_id": "x", "status": {')
            case "wrong_shape":
                return json_response(200, _dumps({"unexpected": [1, 2, 3]}))
            case "reset":
                return reset_mid_body(b"{" * 100, sent=100, promised=4096)
            case "drip":
                return dripping(b'{"slow": "' + b"x" * 200 + b'"}', every=0.2)
        return None

    # -- Parallel -------------------------------------------------------------------------

    async def _parallel(self, request: Request, parts: list[str]) -> Response:
        if request.headers.get("x-api-key") != self.world.parallel_key:
            self._count("parallel.unauthorized")
            return _parallel_error(401, "Unauthorized: invalid or missing credentials")
        match parts:
            case ["tasks", "groups", group_id]:
                self._count("parallel.group")
                group = self.world.groups.get(group_id)
                if group is None:
                    return _parallel_error(404, "Task group not found")
                return json_response(200, _dumps(group.to_json()))
            case ["tasks", "groups", group_id, "runs"]:
                self._count("parallel.runs_stream")
                group = self.world.groups.get(group_id)
                if group is None:
                    return _parallel_error(404, "Task group not found")
                broken = self.world.take_fault(request.path, frozenset({"break_stream"}))
                return _sse(
                    _latest_per_run(_after(group.run_log, request.param("last_event_id"))),
                    request.param("status"),
                    break_after=broken.after if broken else None,
                )
            case ["tasks", "groups", group_id, "events"]:
                self._count("parallel.events_stream")
                self.world.event_cursors.append(request.param("last_event_id"))
                group = self.world.groups.get(group_id)
                if group is None:
                    return _parallel_error(404, "Task group not found")
                broken = self.world.take_fault(request.path, frozenset({"break_stream"}))
                return _live_events(
                    self.world,
                    group_id,
                    request.param("last_event_id"),
                    timeout=float(request.param("timeout") or 3600),
                    break_after=broken.after if broken else None,
                )
            case ["tasks", "groups", group_id, "runs", run_id]:
                return self._parallel_run(run_id, group_id)
            case ["tasks", "runs", run_id]:
                return self._parallel_run(run_id, None)
            case ["tasks", "runs", run_id, "result"]:
                self._count("parallel.result")
                return await self._parallel_result(run_id, request.param("timeout"))
        return _parallel_error(404, "Not found")

    async def _parallel_result(self, run_id: str, wait_param: str | None) -> Response:
        """``GET /v1/tasks/runs/{id}/result``: wait up to ``?timeout`` seconds (default 600)
        for the run to finish; 200 with the output once completed, 408 while it is still
        active, 404 when it failed, was cancelled or is unknown."""
        try:
            wait = float(wait_param) if wait_param else 600.0
        except ValueError:
            return _parallel_error(422, "Request validation error")
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            run = self.world.parallel_runs.get(run_id)
            if run is None or run.status in {"failed", "cancelled"}:
                return _parallel_error(404, "Run failed or run id not found")
            if run.status == "completed":
                output = {"basis": [], "type": "json", "content": {"answer": "simulated"}}
                return json_response(200, _dumps({"run": run.to_json(), "output": output}))
            if time.monotonic() >= deadline:
                return _parallel_error(408, "Request timed out; run still active")
            await anyio.sleep(0.01)

    def _parallel_run(self, run_id: str, group_id: str | None) -> Response:
        self._count("parallel.run")
        run = self.world.parallel_runs.get(run_id)
        if run is None or (group_id is not None and run.group_id != group_id):
            return _parallel_error(404, "Run id not found")
        return json_response(200, _dumps(run.to_json()))

    # -- Trigger.dev --------------------------------------------------------------------

    def _trigger(self, request: Request, parts: list[str]) -> Response:
        allowed, remaining, reset = self.limiter.take()
        headers = [
            ("x-ratelimit-limit", str(self.limiter.capacity)),
            ("x-ratelimit-remaining", str(remaining)),
            ("x-ratelimit-reset", str(int(reset * 1000))),
        ]
        if not allowed:
            self._count("trigger.rate_limited")
            seconds = max(0, math.ceil(reset - self.limiter.clock()))
            problem = {
                "title": "Rate Limit Exceeded",
                "status": 429,
                "type": "https://trigger.dev/docs/limits#rate-limits",
                "detail": f"Rate limit exceeded 0/{self.limiter.capacity} requests remaining. Retry in {seconds} seconds.",
                "reset": int(reset * 1000),
                "limit": self.limiter.capacity,
                "remaining": 0,
                "secondsUntilReset": seconds,
            }
            return Response(
                429, [("content-type", "application/problem+json"), *headers], _dumps(problem)
            )
        if request.headers.get("authorization") != f"Bearer {self.world.trigger_key}":
            self._count("trigger.unauthorized")
            return json_response(401, _dumps({"error": "Invalid or Missing API key"}), headers)
        version = request.headers.get("x-trigger-api-version")
        match parts:
            case ["v3", "runs", run_id]:
                self._count("trigger.run")
                run = self.world.trigger_runs.get(run_id)
                if run is None:
                    return json_response(404, _dumps({"error": "Run not found"}), headers)
                return json_response(200, _dumps(run.present(version, detail=True)), headers)
            case ["v1", "runs"]:
                self._count("trigger.list")
                return self._list(request, version, headers)
        return json_response(404, _dumps({"error": "Not found"}), headers)

    def _list(
        self, request: Request, version: str | None, headers: list[tuple[str, str]]
    ) -> Response:
        """``GET /api/v1/runs``: filters matched against what ``version`` presents."""

        def values(name: str) -> set[str]:
            raw = request.param(f"filter[{name}]")
            return {v for v in raw.split(",") if v} if raw else set()

        statuses = values("status")
        known = trigger_statuses("2025-07-16" if is_current(version) else "legacy")
        if statuses - known:
            invalid = ", ".join(sorted(statuses - known))
            return json_response(
                400, _dumps({"error": f"Invalid status values: {invalid}"}), headers
            )
        tasks, tags = values("taskIdentifier"), values("tag")
        versions, queues = values("version"), values("queue")
        is_test = request.param("filter[isTest]")
        if is_test not in (None, "", "true", "false"):
            return json_response(
                400, _dumps({"error": f"Invalid value for isTest: {is_test}"}), headers
            )
        period = request.param("filter[createdAt][period]") or "7d"
        horizon = self.world.now() - _period(period)
        try:
            size = min(100, max(1, int(request.param("page[size]") or 25)))
        except ValueError:
            return json_response(400, _dumps({"error": "Invalid page size"}), headers)
        runs = [
            r
            for r in self.world.trigger_runs.values()
            if (not statuses or public_status(r.state, version) in statuses)
            and (not tasks or r.task in tasks)
            and (not tags or tags & set(r.tags))
            and (not versions or r.version in versions)
            and (not queues or r.queue_name in queues)
            and (not is_test or r.is_test == (is_test == "true"))
            and datetime.fromisoformat(r.created_at) >= horizon
        ]
        runs.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        after = request.param("page[after]")
        if after:
            ids = [r.id for r in runs]
            runs = runs[ids.index(after) + 1 :] if after in ids else []
        page = runs[:size]
        more = len(runs) > size
        body = {
            "data": [r.present(version, detail=False) for r in page],
            "pagination": {"next": page[-1].id} if more and page else {},
        }
        return json_response(200, _dumps(body), headers)

    # -- control API ------------------------------------------------------------------------

    async def _control(self, request: Request, parts: list[str]) -> Response:
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            return json_response(400, _dumps({"error": "body is not JSON"}))
        w = self.world
        try:
            match request.method, parts:
                case "GET", ["stats"]:
                    return json_response(
                        200, _dumps({"requests": w.requests, "rate_limited": self.limiter.rejected})
                    )
                case "GET", ["parallel", "groups", group_id]:
                    runs = w.groups[group_id].runs.values()
                    return json_response(200, _dumps({"runs": {r.run_id: r.status for r in runs}}))
                case "POST", ["faults"]:
                    w.add_fault(
                        Fault(
                            match=body["match"],
                            kind=body.get("kind", "status"),
                            status=int(body.get("status", 500)),
                            headers=list(body.get("headers", {}).items()),
                            body=body["body"].encode() if "body" in body else None,
                            times=body.get("times"),
                            after=int(body.get("after", 1)),
                        )
                    )
                case "DELETE", ["faults"]:
                    w.clear_faults()
                case "POST", ["realtime", "reset"]:
                    self.realtime.reset()
                case "POST", ["realtime", "limits"]:
                    rt = self.realtime
                    rt.limit = int(body.get("limit", rt.limit))
                    rt.cap = int(body.get("cap", rt.cap))
                    rt.long_poll = float(body.get("long_poll", rt.long_poll))
                case "POST", ["parallel", "groups"]:
                    w.add_group(
                        body["id"], int(body.get("runs", 0)), status=body.get("status", "queued")
                    )
                case "POST", ["parallel", "groups", group_id, "progress"]:
                    changed = w.progress_group(
                        group_id, int(body.get("count", 1)), body["status"], body.get("error")
                    )
                    return json_response(200, _dumps({"runs": changed}))
                case "POST", ["parallel", "groups", group_id, "add"]:
                    return json_response(
                        200, _dumps({"runs": w.add_group_runs(group_id, int(body.get("count", 1)))})
                    )
                case "POST", ["parallel", "runs"]:
                    w.add_parallel_run(body["id"], body.get("status", "queued"))
                case "POST", ["parallel", "runs", run_id]:
                    w.set_parallel_run(run_id, body["status"], body.get("error"))
                case "POST", ["trigger", "runs"]:
                    w.add_trigger_run(
                        body["id"],
                        body.get("task", "task"),
                        body.get("status", "QUEUED"),
                        tags=body.get("tags"),
                    )
                case "POST", ["trigger", "runs", run_id]:
                    w.set_trigger_run(run_id, body["status"], body.get("error"))
                case _:
                    return json_response(404, _dumps({"error": "unknown control endpoint"}))
        except (KeyError, ValueError, TypeError) as exc:
            return json_response(400, _dumps({"error": f"bad control request: {exc!r}"}))
        return json_response(200, _dumps({"ok": True}))


def _parallel_error(status: int, message: str) -> Response:
    return json_response(
        status, _dumps({"type": "error", "error": {"ref_id": "ref_sim", "message": message}})
    )


def _after(
    events: list[tuple[str, dict[str, Any]]], cursor: str | None
) -> list[tuple[str, dict[str, Any]]]:
    if not cursor:
        return list(events)
    ids = [e[0] for e in events]
    return list(events[ids.index(cursor) + 1 :]) if cursor in ids else list(events)


def _latest_per_run(
    events: list[tuple[str, dict[str, Any]]],
) -> list[tuple[str, dict[str, Any]]]:
    """Each run once, at its latest state, in event order (the runs stream's view)."""
    latest = {run["run_id"]: (event_id, run) for event_id, run in events}
    return sorted(latest.values(), key=lambda entry: entry[0])


def _frame(event_id: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"id: {event_id}\ndata: {json.dumps(payload)}\n\n".encode()


def _event_stream(frames: AsyncIterator[bytes], break_after: int | None) -> Response:
    """A ``text/event-stream`` response of ``frames``; ``break_after``: hang up mid-event
    after that many events (a dropped connection)."""

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in frames:
            if break_after is not None and sent >= break_after:
                yield chunk[: len(chunk) // 2]
                raise BrokenBody
            yield chunk
            sent += 1

    return Response(
        200, [("content-type", "text/event-stream"), ("cache-control", "no-store")], stream=body()
    )


def _sse(
    events: list[tuple[str, dict[str, Any]]], status: str | None, break_after: int | None = None
) -> Response:
    async def frames() -> AsyncIterator[bytes]:
        for event_id, run in events:
            if status and run.get("status") != status:
                continue
            yield _frame(event_id, {"type": "task_run.state", "event_id": event_id, "run": run})
            await anyio.lowlevel.checkpoint()

    return _event_stream(frames(), break_after)


def _group_events(group: Any) -> list[tuple[str, dict[str, Any]]]:
    """The group's events stream: status and run-state events, in id order."""
    merged = [
        (event_id, {"type": "task_group_status", "event_id": event_id, "status": status})
        for event_id, status in group.status_events
    ] + [
        (event_id, {"type": "task_run.state", "event_id": event_id, "run": run})
        for event_id, run in group.events
    ]
    return sorted(merged, key=lambda item: item[0])


def _live_events(
    world: World,
    group_id: str,
    cursor: str | None,
    *,
    timeout: float,
    break_after: int | None = None,
) -> Response:
    """``GET .../groups/{id}/events``: past events after ``cursor``, then live ones.

    The connection stays open while a run of the group is active (at most
    ``timeout`` seconds), and closes once the group is inactive. ``break_after``
    hangs up mid-event after that many events (a dropped connection).
    """

    async def frames() -> AsyncIterator[bytes]:
        last = cursor or ""
        deadline = time.monotonic() + timeout
        while True:
            group = world.groups[group_id]
            for event_id, payload in _group_events(group):
                if event_id <= last:
                    continue
                yield _frame(event_id, payload)
                last = event_id
            if not group.status_json()["is_active"] or time.monotonic() > deadline:
                return
            await anyio.sleep(0.01)

    return _event_stream(frames(), break_after)


def _period(text: str) -> timedelta:
    unit = text[-1]
    number = int(text[:-1] or 0)
    return timedelta(
        seconds=number * {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}.get(unit, 86400)
    )
