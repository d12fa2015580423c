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
``GET /incidents``, ``/incidents/{id}``   incidents (``daemon/api_incidents.py``)
``POST|DELETE /incidents/{id}/ack``      acknowledge, or take it back
``POST /-/reload``                       re-read the config file (as SIGHUP)
``GET /cluster``                         with ``cluster:``, the members, what each
                                         owns, when it renewed; else 404
=======================================  =========================================

``/watches``, ``/silences``, ``/incidents`` and ``/-/reload`` need ``Authorization: Bearer $WATCHER_API_TOKEN``
when a token is set; without one they answer only on a loopback address.
Probes and metrics are open (they show no ids beyond counts and notifier names
in private form).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio.abc
import structlog

from watcher.config.loader import ConfigError
from watcher.config.operations import HttpConfig, is_loopback
from watcher.daemon.api_errors import Rejected
from watcher.daemon.api_incidents import Incidents, answer_incidents
from watcher.daemon.api_silences import ApiSilence, parse_silence_request
from watcher.daemon.api_watches import WatchRequest, parse_watch_request
from watcher.daemon.logging import SCRUBBER
from watcher.daemon.metrics import CONTENT_TYPE, Metrics
from watcher.daemon.views import (
    DaemonView,
    count_watches,
    realtime_view,
    watch_view,
    watch_views,
)
from watcher.http_server import HttpServer, Request, Response, json_response

__all__ = ["MAX_REQUEST_BODY", "Control", "ControlApi", "serve_endpoints"]

log = structlog.get_logger("watcher.http")

MAX_REQUEST_BODY = 64 * 1024


def _json(status: int, payload: object) -> Response:
    # Every answer passes the scrubber: a watch's problem may quote an upstream body.
    text = json.dumps(SCRUBBER.value(payload), separators=(",", ":"))
    return json_response(status, text.encode())


def _problem(status: int, *problems: str) -> Response:
    return _json(status, {"error": problems[0], "problems": list(problems)})


Route = Callable[[Request], Awaitable[Response]]


class Control(Protocol):
    """What the API may change: the watches and silences it adds (the file's stay)."""

    async def add_watch(self, request: WatchRequest) -> bool:
        """Add or update a watch; whether it was created."""
        ...

    async def remove_watch(self, key: str) -> None:
        """Remove a watch the API added."""
        ...

    def silence_views(self) -> list[dict[str, object]]:
        """Every silence."""
        ...

    async def add_silence(self, silence: ApiSilence) -> None:
        """Add a silence."""
        ...

    async def remove_silence(self, ident: str) -> None:
        """Lift a silence the API added."""
        ...


class ControlApi:
    """Answers the endpoints for one daemon: reads through ``view``, changes through
    ``control`` and ``reload``."""

    def __init__(
        self,
        view: DaemonView,
        control: Control,
        *,
        metrics: Metrics,
        reload: Callable[[], Awaitable[bool]],
        token: str | None,
        loopback: bool,
        incidents: Incidents | None = None,
    ) -> None:
        self.view = view
        self.control = control
        self.incidents = incidents
        self.metrics = metrics
        self.reload = reload
        self._token = token.encode() if token else None
        self._open = loopback and token is None
        self.guarded = token is not None
        """Whether the control API asks for a token."""
        self.watch_api = view.config.http.watch_api

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
            "/cluster": self._cluster,
        }
        if path in simple:
            if method not in ("GET", "HEAD"):
                return _problem(405, f"{method} not allowed on {path}: use GET")
            return await simple[path](request)
        if path == "/silences" or path.startswith("/silences/"):
            if denied := self._authorize(request):
                return denied
            return await self._silences(request, path)
        if (path == "/incidents" or path.startswith("/incidents/")) and self.incidents:
            if denied := self._authorize(request):
                return denied
            status, answer = await answer_incidents(
                self.incidents, method, path, request.query, request.body, self.watch_api
            )
            return _json(status, answer)
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
        return _json(200, {"status": "ok", "uptime": round(self.view.uptime(), 3)})

    async def _readyz(self, request: Request) -> Response:
        reasons = self.view.not_ready()
        if reasons:
            return _json(503, {"ready": False, "reasons": reasons})
        cluster = self.view.cluster
        if cluster is not None and (standing := cluster.standing().value) != "member":
            # Still 200: a replica failing open is watching, and must not be restarted.
            return _json(200, {"ready": True, "degraded": True, "cluster": standing})
        return _json(200, {"ready": True})

    async def _cluster(self, request: Request) -> Response:
        if self.view.cluster is None:
            return _problem(404, "no cluster: this daemon runs alone (no cluster: section)")
        return _json(200, SCRUBBER.value(await self.view.cluster.view()))

    async def _metrics(self, request: Request) -> Response:
        watcher = self.view.watcher
        counts = await count_watches(watcher.registry) if watcher is not None else None
        body = SCRUBBER.text(self.metrics.render(counts).decode())
        return Response(200, [("content-type", CONTENT_TYPE)], body.encode())

    # -- watches --------------------------------------------------------------------------

    def _list(self) -> Response:
        body: dict[str, Any] = {"watches": watch_views(self.view)}
        if (realtime := realtime_view(self.view)) is not None:
            body["realtime"] = realtime
        return _json(200, body)

    async def _add(self, request: Request) -> Response:
        if not self.watch_api:
            return _problem(403, "the control API is off (http.watch_api: false)")
        try:
            parsed = parse_watch_request(request.body, self.view.config.http.max_expire_after)
            created = await self.control.add_watch(parsed)
        except Rejected as exc:
            return _problem(exc.status, *exc.problems)
        key = parsed.watch.ref().key
        shown = watch_view(self.view, key) or {"key": key}
        return _json(201 if created else 200, {"created": created, "watch": shown})

    async def _delete(self, path: str) -> Response:
        if not self.watch_api:
            return _problem(403, "the control API is off (http.watch_api: false)")
        parts = path.split("/")
        if len(parts) != 4 or not parts[2] or not parts[3]:
            return _problem(404, "use DELETE /watches/{type}/{id}")
        key = f"{parts[2]}:{parts[3]}"
        try:
            await self.control.remove_watch(key)
        except Rejected as exc:
            return _problem(exc.status, *exc.problems)
        return _json(200, {"removed": key})

    # -- silences -------------------------------------------------------------------------

    async def _silences(self, request: Request, path: str) -> Response:
        method = request.method
        if path == "/silences" and method == "GET":
            return _json(200, {"silences": self.control.silence_views()})
        if not self.watch_api:
            return _problem(403, "the control API is off (http.watch_api: false)")
        if path == "/silences":
            if method != "POST":
                return _problem(405, f"{method} not allowed on /silences: use GET or POST")
            try:
                silence = parse_silence_request(
                    request.body,
                    self.view.clock.wall(),
                    self.view.config.http.max_expire_after,
                )
            except Rejected as exc:
                return _problem(exc.status, *exc.problems)
            await self.control.add_silence(silence)
            return _json(201, {"silence": silence.view(self.view.clock.wall())})
        if method != "DELETE":
            return _problem(405, f"{method} not allowed on {path}: use DELETE")
        ident = path.removeprefix("/silences/")
        try:
            await self.control.remove_silence(ident)
        except Rejected as exc:
            return _problem(exc.status, *exc.problems)
        return _json(200, {"removed": ident})

    async def _reload(self) -> Response:
        if await self.reload():
            return _json(200, {"reloaded": True, "watches": len(self.view.config.watches)})
        return _problem(422, "reload refused; the running configuration stays (see the log)")


async def serve_endpoints(
    root: anyio.abc.TaskGroup, api: ControlApi, config: HttpConfig
) -> HttpServer | None:
    """Serve ``api`` on ``http.listen`` in ``root``; None when the *default* address is
    taken (a warning: another daemon on the host), ``ConfigError`` when a chosen one is."""
    address = config.address()
    assert address is not None
    host, port = address
    if config.watch_api and not api.guarded and not is_loopback(host):
        log.warning(
            "the watch API is off: the daemon listens beyond loopback and "
            "WATCHER_API_TOKEN is not set",
            listen=config.listen,
        )
    server = HttpServer(api.handle, host, port, max_body=MAX_REQUEST_BODY, head_timeout=10.0)
    try:
        await root.start(server.serve)
    except OSError as exc:
        if config.default_listen:
            log.warning(
                "HTTP endpoints off: the default address is in use (another daemon on "
                "this host?); set http.listen to choose one",
                listen=config.listen,
                error=exc.strerror or str(exc),
            )
            return None
        raise ConfigError(
            [f"http.listen {config.listen}: cannot listen: {exc.strerror or exc}"]
        ) from None
    return server
