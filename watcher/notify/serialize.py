"""Events as JSON: the ``format: json`` message body and the machine-readable record."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from watcher.core.conditions import Ack, Condition, ConditionKind, Moment
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.statuses import Severity, Source

__all__ = [
    "condition_from_dict",
    "condition_to_dict",
    "event_from_dict",
    "event_to_dict",
    "event_to_json",
    "events_to_json",
    "rfc3339",
]


def rfc3339(moment: datetime) -> str:
    """``2026-11-22T10:00:00.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_to_dict(event: Event) -> dict[str, Any]:
    """The event in its documented JSON shape."""
    return {
        "event_id": event.event_id,
        "kind": event.kind.value,
        "severity": event.severity.value,
        "source": event.source.value,
        "watch": {
            "type": event.watch.type.value,
            "id": event.watch.id,
            "name": event.watch.name,
            "labels": dict(event.watch.labels),
        },
        "subject_id": event.subject_id,
        "from_status": event.from_status,
        "to_status": event.to_status,
        "observed_at": rfc3339(event.observed_at),
        "url": event.url,
        "details": _plain(dict(event.details)),
        **({"cause": event_to_dict(event.cause)} if event.cause is not None else {}),
        **({"incident": _plain(event.incident)} if event.incident is not None else {}),
    }


def _plain(value: Any) -> Any:
    """Read-only mappings and tuples as JSON-ready dicts and lists."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    return value


def event_to_json(event: Event) -> str:
    """The event as a compact JSON document."""
    return json.dumps(event_to_dict(event), separators=(",", ":"))


def events_to_json(events: Sequence[Event]) -> str:
    """A digest: ``{"digest": true, "events": [...]}``, each event in its own shape."""
    return json.dumps(
        {"digest": True, "events": [event_to_dict(e) for e in events]}, separators=(",", ":")
    )


def event_from_dict(data: dict[str, Any]) -> Event:
    """An event read back from :func:`event_to_dict` (the state file's outbox).

    Raises ``ValueError`` (or ``KeyError``) for data of another shape.
    """
    watch = data["watch"]
    return Event(
        event_id=str(data["event_id"]),
        kind=EventKind(data["kind"]),
        severity=Severity(data["severity"]),
        source=Source(data["source"]),
        watch=WatchRef(
            WatchType(watch["type"]),
            str(watch["id"]),
            watch.get("name"),
            freeze({str(k): str(v) for k, v in (watch.get("labels") or {}).items()}),
        ),
        subject_id=str(data["subject_id"]),
        from_status=data.get("from_status"),
        to_status=str(data["to_status"]),
        observed_at=datetime.fromisoformat(data["observed_at"]),
        details=freeze(dict(data.get("details") or {})),
        url=data.get("url"),
        cause=event_from_dict(data["cause"]) if data.get("cause") else None,
        incident=freeze(dict(data["incident"])) if data.get("incident") else None,
    )


def condition_to_dict(condition: Condition) -> dict[str, Any]:
    """An open condition, for the state file."""
    return {
        "key": condition.key,
        "kind": condition.kind.value,
        "opened": event_to_dict(condition.opened),
        "latest": event_to_dict(condition.latest),
        "count": condition.count,
        "ack": condition.ack.as_dict(rfc3339) if condition.ack is not None else None,
        "escalated": sorted(condition.escalated),
        "engaged": list(condition.engaged),
        "timeline": [m.as_dict(rfc3339) for m in condition.timeline],
    }


def condition_from_dict(data: dict[str, Any]) -> Condition:
    """An open condition read back from :func:`condition_to_dict`."""
    return Condition(
        key=str(data["key"]),
        kind=ConditionKind(data["kind"]),
        opened=event_from_dict(data["opened"]),
        latest=event_from_dict(data["latest"]),
        count=int(data.get("count", 1)),
        ack=(
            Ack(str(ack["by"]), datetime.fromisoformat(ack["at"]), ack.get("note"))
            if (ack := data.get("ack"))
            else None
        ),
        escalated=frozenset(str(t) for t in data.get("escalated") or ()),
        engaged=tuple(str(c) for c in data.get("engaged") or ()),
        timeline=tuple(
            Moment(
                datetime.fromisoformat(m["at"]),
                str(m["what"]),
                m.get("text") or "",
                m.get("event_id"),
            )
            for m in data.get("timeline") or ()
        ),
    )
