"""The incidents over the HTTP API (``run-watcher incidents``, ``run-watcher ack``).

====================================  ===========================================
``GET /incidents[?open=true]``        open incidents (oldest first), then the
                                      latest resolved
``GET /incidents/{id}``               one, by id or unique prefix, with its timeline
``POST /incidents/{id}/ack``          acknowledge: ``{"by": NAME, "note": TEXT}``
``DELETE /incidents/{id}/ack``        take the acknowledgement back
====================================  ===========================================

An unknown, ambiguous or resolved incident is a 404, 400 or 409 that says which; one
another replica of a cluster holds is acknowledged there (202).
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from watcher.core.incidents import IncidentError, match_id
from watcher.daemon.api_errors import Rejected, json_object

__all__ = ["Incidents", "answer_incidents"]

log = structlog.get_logger("watcher.api")

_MAX_NAME, _MAX_NOTE = 100, 1000


class Incidents(Protocol):
    """The dispatcher's incident desk."""

    async def incidents(self, open_only: bool = False) -> list[dict[str, Any]]:
        """Open incidents, then the latest resolved."""
        ...

    async def acknowledge(
        self, ref: str, by: str, note: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Acknowledge an open incident: 200 (or 202: another replica applies it), its view."""
        ...

    async def unacknowledge(self, ref: str) -> tuple[int, dict[str, Any]]:
        """Take an acknowledgement back: 200 or 202, its view."""
        ...


_STATUS = {"unknown": 404, "ambiguous": 400, "invalid": 400, "conflict": 409}


def _one(views: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    by_id = {str(v["id"]): v for v in views}
    return by_id[match_id(by_id, ref, "incident")]


async def answer_incidents(
    desk: Incidents,
    method: str,
    path: str,
    query: dict[str, list[str]],
    body: bytes,
    writable: bool,
) -> tuple[int, dict[str, Any]]:
    """The status and JSON answer of one request under ``/incidents``.

    ``writable`` is False when the control API is off (``http.watch_api: false``).
    """
    parts = [p for p in path.split("/") if p][1:]
    try:
        if not parts:
            if method not in ("GET", "HEAD"):
                raise Rejected(405, [f"{method} not allowed on /incidents: use GET"])
            open_only = (query.get("open") or ["false"])[0].lower() in ("1", "true", "yes")
            return 200, {"incidents": await desk.incidents(open_only)}
        ref = parts[0]
        if len(parts) == 1:
            if method not in ("GET", "HEAD"):
                raise Rejected(405, [f"{method} not allowed on {path}: use GET"])
            return 200, {"incident": _one(await desk.incidents(), ref)}
        if parts[1:] != ["ack"]:
            raise Rejected(404, [f"no endpoint {path}"])
        if not writable:
            raise Rejected(403, ["the control API is off (http.watch_api: false)"])
        if method == "POST":
            data = json_object(body, '{"by": NAME, "note": TEXT}') if body.strip() else {}
            by, note = data.get("by"), data.get("note")
            if not isinstance(by, str) or not by.strip() or len(by) > _MAX_NAME:
                raise Rejected(400, [f"by: give who acknowledges it (1 to {_MAX_NAME} characters)"])
            if note is not None and (not isinstance(note, str) or len(note) > _MAX_NOTE):
                raise Rejected(400, [f"note: a text of at most {_MAX_NOTE} characters"])
            status, view = await desk.acknowledge(ref, by.strip(), note)
            log.info("incident acknowledged", incident=view["id"], by=by.strip(), note=note)
            return status, {"incident": view}
        if method == "DELETE":
            status, view = await desk.unacknowledge(ref)
            log.info("incident acknowledgement taken back", incident=view["id"])
            return status, {"incident": view}
        raise Rejected(405, [f"{method} not allowed on {path}: use POST or DELETE"])
    except IncidentError as exc:
        return _STATUS[exc.problem], {"error": str(exc), "problems": [str(exc)]}
    except Rejected as exc:
        return exc.status, {"error": exc.problems[0], "problems": exc.problems}
