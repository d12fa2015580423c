"""The daemon's HTTP endpoints: probes, metrics, the watch list and the watch API.

=======================================  =========================================
``GET /healthz``                         200 while the event loop answers
``GET /readyz``                          200 once every watch was polled once and
                                         notifiers are configured; else 503 + why
``GET /metrics``                         Prometheus text format
``GET /watches``                         the watches and where each stands (JSON)
``POST /watches``                        add a watch: a config entry as JSON, plus
                                         optional ``expire_after``
``DELETE /watches/{type}/{id}``          remove a watch added through the API
``GET /silences``                        the silences, from the file and the API
``POST /silences``                       add a silence: a config entry as JSON, with
                                         ``ends_at`` or ``duration``
``DELETE /silences/{id}``                remove a silence added through the API
``POST /-/reload``                       re-read the config file (as SIGHUP)
=======================================  =========================================

``/watches``, ``/silences`` and ``/-/reload`` need ``Authorization: Bearer $WATCHER_API_TOKEN``
when a token is set; without one they answer only on a loopback address.
Probes and metrics are open (they show no ids beyond counts and notifier names
in private form).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from watcher.core.diff import group_state
from watcher.core.snapshots import GroupSnapshot
from watcher.core.watch import DiscoveryState, WatchState, describe
from watcher.daemon.api_errors import Rejected
from watcher.daemon.api_silences import parse_silence_request
from watcher.daemon.api_watches import parse_watch_request
from watcher.daemon.logging import SCRUBBER
from watcher.daemon.metrics import CONTENT_TYPE, watch_state
from watcher.http_server import Request, Response, json_response

if TYPE_CHECKING:
    from watcher.daemon.app import Daemon

__all__ = ["MAX_REQUEST_BODY", "ControlApi", "watch_view"]

log = structlog.get_logger("watcher.http")

MAX_REQUEST_BODY = 64 * 1024


def _json(status: int, payload: object) -> Response:
    # Every answer passes the scrubber: a watch's problem may quote an upstream body.
    text = json.dumps(SCRUBBER.value(payload), separators=(",", ":"))
    return json_response(status, text.encode())


def _problem(status: int, *problems: str) -> Response:
    return _json(status, {"error": problems[0], "problems": list(problems)})


Route = Callable[[Request], Awaitable[Response]]


class ControlApi:
    """Answers the endpoints for one daemon."""

    def __init__(self, daemon: Daemon, *, token: str | None, loopback: bool) -> None:
        self.daemon = daemon
        self._token = token.encode() if token else None
        self._open = loopback and token is None
        self.watch_api = daemon.config.http.watch_api

    # -- dispatch -----------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """The response to one request; never raises."""
        try:
            return await self._route(request)
        except Exception:
            log.exception("internal error answering", method=request.method, path=request.path)
            return _problem(500, "internal error; see the daemon's log")

    async def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        method = request.method
        simple: dict[str, Route] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
        }
        if path in simple:
            if method not in ("GET", "HEAD"):
                return _problem(405, f"{method} not allowed on {path}: use GET")
            return await simple[path](request)
        if path == "/silences" or path.startswith("/silences/"):
            if denied := self._authorize(request):
                return denied
            return await self._silences(request, path)
        if path == "/watches" or path.startswith("/watches/") or path == "/-/reload":
            if denied := self._authorize(request):
                return denied
            if path == "/watches":
                if method == "GET":
                    return self._list()
                if method == "POST":
                    return await self._add(request)
                return _problem(405, f"{method} not allowed on /watches: use GET or POST")
            if path == "/-/reload":
                if method != "POST":
                    return _problem(405, "use POST /-/reload")
                if not self.watch_api:
                    return _problem(403, "the control API is off (http.watch_api: false)")
                return await self._reload()
            if method != "DELETE":
                return _problem(405, f"{method} not allowed on {path}: use DELETE")
            return await self._delete(path)
        return _problem(404, f"no endpoint {path}")

    def _authorize(self, request: Request) -> Response | None:
        if self._token is None:
            if self._open:
                return None
            return _problem(
                403,
                "the watch API is off: the daemon listens beyond loopback and "
                "WATCHER_API_TOKEN is not set",
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token
        ):
            return Response(
                401,
                [("content-type", "application/json"), ("www-authenticate", "Bearer")],
                b'{"error":"missing or wrong bearer token (WATCHER_API_TOKEN)"}',
            )
        return None

    # -- probes and metrics -------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return _json(200, {"status": "ok", "uptime": round(self.daemon.uptime(), 3)})

    async def _readyz(self, request: Request) -> Response:
        reasons = self.daemon.not_ready()
        if reasons:
            return _json(503, {"ready": False, "reasons": reasons})
        return _json(200, {"ready": True})

    async def _metrics(self, request: Request) -> Response:
        metrics = self.daemon.metrics
        if metrics is None:  # pragma: no cover - the server starts with the metrics
            return _problem(503, "metrics not ready")
        body = SCRUBBER.text(metrics.render().decode())
        return Response(200, [("content-type", CONTENT_TYPE)], body.encode())

    # -- watches --------------------------------------------------------------------------

    def _list(self) -> Response:
        return _json(200, {"watches": self.daemon.watch_views()})

    async def _add(self, request: Request) -> Response:
        if not self.watch_api:
            return _problem(403, "the control API is off (http.watch_api: false)")
        try:
            parsed = parse_watch_request(request.body, self.daemon.config.http.max_expire_after)
            created, view = await self.daemon.add_api_watch(parsed)
        except Rejected as exc:
            return _problem(exc.status, *exc.problems)
        return _json(201 if created else 200, {"created": created, "watch": view})

    async def _delete(self, path: str) -> Response:
        if not self.watch_api:
            return _problem(403, "the control API is off (http.watch_api: false)")
        parts = path.split("/")
        if len(parts) != 4 or not parts[2] or not parts[3]:
            return _problem(404, "use DELETE /watches/{type}/{id}")
        key = f"{parts[2]}:{parts[3]}"
        try:
            await self.daemon.remove_api_watch(key)
        except Rejected as exc:
            return _problem(exc.status, *exc.problems)
        return _json(200, {"removed": key})

    # -- silences -------------------------------------------------------------------------

    async def _silences(self, request: Request, path: str) -> Response:
        method = request.method
        if path == "/silences" and method == "GET":
            return _json(200, {"silences": self.daemon.silence_views()})
        if not self.watch_api:
            return _problem(403, "the control API is off (http.watch_api: false)")
        if path == "/silences":
            if method != "POST":
                return _problem(405, f"{method} not allowed on /silences: use GET or POST")
            try:
                silence = parse_silence_request(
                    request.body,
                    self.daemon.clock.wall(),
                    self.daemon.config.http.max_expire_after,
                )
            except Rejected as exc:
                return _problem(exc.status, *exc.problems)
            await self.daemon.add_api_silence(silence)
            return _json(201, {"silence": silence.view(self.daemon.clock.wall())})
        if method != "DELETE":
            return _problem(405, f"{method} not allowed on {path}: use DELETE")
        ident = path.removeprefix("/silences/")
        try:
            await self.daemon.remove_api_silence(ident)
        except Rejected as exc:
            return _problem(exc.status, *exc.problems)
        return _json(200, {"removed": ident})

    async def _reload(self) -> Response:
        if await self.daemon.reload_from_file():
            return _json(200, {"reloaded": True, "watches": len(self.daemon.config.watches)})
        return _problem(422, "reload refused; the running configuration stays (see the log)")


def _status(state: WatchState | DiscoveryState) -> str | None:
    snap = state.snapshot if isinstance(state, WatchState) else None
    if isinstance(snap, GroupSnapshot):
        return group_state(snap)
    return snap.status if snap is not None else None


def watch_view(daemon: Daemon, key: str) -> dict[str, Any] | None:
    """One watch as ``/watches`` shows it."""
    watcher = daemon.watcher
    rt = watcher.registry.get(key) if watcher is not None else None
    if rt is None or watcher is None:
        return None
    now, wall = daemon.clock.now(), daemon.clock.wall().timestamp()

    def unix(moment: float | None) -> float | None:
        return None if moment is None else round(wall - (now - moment), 3)

    state = rt.state
    api = daemon.api_watches.get(key)
    problem = state.health.last_problem
    view: dict[str, Any] = {
        "key": rt.key,
        "type": rt.ref.type.value,
        "id": rt.ref.id,
        "name": rt.ref.name,
        "labels": dict(rt.ref.labels),
        "origin": "api" if api is not None else "config",
        "state": watch_state(rt),
        "detail": (
            f"{len(state.seen)} runs seen, {len(rt.children or ())} followed"
            if isinstance(state, DiscoveryState)
            else describe(state)
        ),
        "status": _status(state),
        "problem": problem.message if problem is not None else None,
        "polls": rt.polls,
        "errors": rt.errors,
        "interval": round(state.schedule.interval, 3),
        "last_poll_at": unix(rt.last_poll_at),
        "last_ok_at": unix(rt.last_ok_at),
        "expires_at": api.expires_at if api is not None else None,
    }
    if isinstance(state, WatchState) and isinstance(state.snapshot, GroupSnapshot):
        view["counts"] = dict(state.snapshot.counts)
    return view
