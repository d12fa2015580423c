"""A fake of PagerDuty's Events API v2 (``POST /v2/enqueue``), under ``/pagerduty``.

Shaped from PagerDuty's published reference (developer-docs: "Send an Alert Event",
"Response Codes & Retry Logic", "Events API Rate Limits"): every request is checked
against the event schema's required fields and enumerations, and answered as the
service does: 202 ``{"status": "success", "message": "Event processed",
"dedup_key": ...}``; 400 ``{"status": "invalid event", "message": "Event object is
invalid", "errors": [...]}``; 429 past about 120 events a minute per routing key.
Alerts are kept by ``dedup_key`` as the service keeps them: a trigger opens one (or
adds to the open one), acknowledge and resolve apply to the open one of the same
routing key, and are dropped otherwise.

Controls for tests: ``GET /pagerduty/_state``; ``POST /pagerduty/_fail`` with
``{"status": 429, "times": 2}`` makes the next requests fail so.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from watcher.http_server import Request, Response, json_response

__all__ = ["PagerDutyFake", "validate_event"]

_ACTIONS = ("trigger", "acknowledge", "resolve")
_SEVERITIES = ("critical", "error", "warning", "info")
_TOP = {
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "images",
    "links",
    "client",
    "client_url",
}
_PAYLOAD = {
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
}
_MAX_BYTES = 512 * 1024
_LIMIT, _WINDOW = 120, 60.0


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _string(
    errors: list[str], where: str, value: Any, *, required: bool, limit: int | None = None
) -> None:
    if value is None:
        if required:
            errors.append(f"'{where}' is missing or blank")
        return
    if not isinstance(value, str) or (required and not value.strip()):
        errors.append(
            f"'{where}' must be a non-blank string" if required else f"'{where}' must be a string"
        )
    elif limit is not None and len(value) > limit:
        errors.append(f"'{where}' is longer than {limit} characters")


def validate_event(body: Any) -> list[str]:
    """What is wrong with an Events API v2 alert event (empty: it is valid)."""
    if not isinstance(body, dict):
        return ["Event object must be a JSON object"]
    errors: list[str] = []
    errors += [f"'{k}' is not a property of an alert event" for k in sorted(set(body) - _TOP)]
    _string(errors, "routing_key", body.get("routing_key"), required=True)
    action = body.get("event_action")
    if action not in _ACTIONS:
        errors.append(f"'event_action' must be one of {', '.join(_ACTIONS)}")
    _string(errors, "dedup_key", body.get("dedup_key"), required=action != "trigger", limit=255)
    for name in ("client", "client_url"):
        _string(errors, name, body.get(name), required=False)
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or not an object")
        else:
            errors += [
                f"'payload.{k}' is not a property of a payload"
                for k in sorted(set(payload) - _PAYLOAD)
            ]
            _string(errors, "payload.summary", payload.get("summary"), required=True, limit=1024)
            _string(errors, "payload.source", payload.get("source"), required=True)
            if payload.get("severity") not in _SEVERITIES:
                errors.append(f"'payload.severity' must be one of {', '.join(_SEVERITIES)}")
            for name in ("component", "group", "class"):
                _string(errors, f"payload.{name}", payload.get(name), required=False)
            stamp = payload.get("timestamp")
            if stamp is not None:
                try:
                    datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
                except ValueError:
                    errors.append("'payload.timestamp' is not an ISO 8601 timestamp")
            details = payload.get("custom_details")
            if details is not None and not isinstance(details, dict):
                errors.append("'payload.custom_details' must be an object")
    for name, required in (("links", "href"), ("images", "src")):
        items = body.get(name)
        if items is None:
            continue
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get(required), str) for i in items
        ):
            errors.append(f"'{name}' must be a list of objects, each with a string '{required}'")
    return errors


class PagerDutyFake:
    """The Events API v2, its alerts, and the requests it saw."""

    def __init__(
        self, routing_keys: set[str] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.routing_keys = routing_keys
        """Keys it accepts; None: any 32-character key."""
        self.clock = clock
        self.requests: list[dict[str, Any]] = []
        """Every request body that was valid JSON, in order."""
        self.accepted: list[dict[str, Any]] = []
        self.rejected: list[tuple[int, list[str]]] = []
        self.alerts: dict[tuple[str, str], dict[str, Any]] = {}
        """(routing_key, dedup_key) -> the alert: status, and its triggers, acks and resolves."""
        self.failures: deque[int] = deque()
        self._recent: dict[str, deque[float]] = {}

    async def handle(self, request: Request, parts: list[str]) -> Response:
        """``/pagerduty/...``."""
        if parts == ["_state"]:
            return json_response(200, _dumps(self.state()))
        if parts == ["_fail"] and request.method == "POST":
            data = json.loads(request.body or b"{}")
            self.failures.extend([int(data.get("status", 500))] * int(data.get("times", 1)))
            return json_response(200, b'{"ok":true}')
        if parts != ["v2", "enqueue"]:
            return json_response(404, b'{"status":"not found"}')
        if request.method != "POST":
            return json_response(405, b'{"status":"method not allowed"}')
        return self._enqueue(request)

    def _invalid(self, status: int, errors: list[str]) -> Response:
        self.rejected.append((status, errors))
        return json_response(
            status,
            _dumps(
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
            ),
        )

    def _enqueue(self, request: Request) -> Response:
        if len(request.body) > _MAX_BYTES:
            return self._invalid(400, ["Event payload is larger than 512 KB"])
        try:
            body = json.loads(request.body)
        except ValueError:
            return self._invalid(400, ["Event is not valid JSON"])
        if isinstance(body, dict):
            self.requests.append(body)
        if self.failures:
            status = self.failures.popleft()
            self.rejected.append((status, ["injected"]))
            message = "Request Limit Exceeded" if status == 429 else "Internal Server Error"
            return json_response(status, _dumps({"status": "error", "message": message}))
        errors = validate_event(body)
        if errors:
            return self._invalid(400, errors)
        key = str(body["routing_key"])
        known = self.routing_keys is None and len(key) == 32 and key.isalnum()
        if not known and (self.routing_keys is None or key not in self.routing_keys):
            return self._invalid(400, ["Invalid routing key"])
        if self._throttled(key):
            self.rejected.append((429, ["throttled"]))
            return json_response(
                429, _dumps({"status": "throttle event", "message": "Request Limit Exceeded"})
            )
        self.accepted.append(body)
        dedup = str(body.get("dedup_key") or f"auto-{len(self.accepted)}")
        self._apply(key, dedup, str(body["event_action"]), body)
        return json_response(
            202, _dumps({"status": "success", "message": "Event processed", "dedup_key": dedup})
        )

    def _throttled(self, key: str) -> bool:
        now = self.clock()
        recent = self._recent.setdefault(key, deque())
        while recent and now - recent[0] >= _WINDOW:
            recent.popleft()
        if len(recent) >= _LIMIT:
            return True
        recent.append(now)
        return False

    def _apply(self, key: str, dedup: str, action: str, body: dict[str, Any]) -> None:
        alert = self.alerts.get((key, dedup))
        if action == "trigger":
            if alert is None or alert["status"] == "resolved":
                if alert is not None:  # a trigger after a resolve is a new alert
                    self.alerts[(key, f"{dedup}#{alert['number']}")] = alert
                alert = {
                    "status": "triggered",
                    "triggers": 0,
                    "acks": 0,
                    "resolves": 0,
                    "number": (alert["number"] + 1) if alert else 1,
                    "summary": body["payload"]["summary"],
                }
                self.alerts[(key, dedup)] = alert
            alert["triggers"] += 1
            return
        if alert is None or alert["status"] == "resolved":
            alert_missing = {"dropped": action}
            self.alerts.setdefault(
                (key, f"dropped:{dedup}"), {"status": "dropped", **alert_missing}
            )
            return
        if action == "acknowledge":
            alert["acks"] += 1
            alert["status"] = "acknowledged"
        else:
            alert["resolves"] += 1
            alert["status"] = "resolved"

    def state(self) -> dict[str, Any]:
        """What it holds, for tests and ``/pagerduty/_state``."""
        return {
            "alerts": {f"{k}|{d}": a for (k, d), a in self.alerts.items()},
            "accepted": len(self.accepted),
            "rejected": [{"status": s, "errors": e} for s, e in self.rejected],
        }
