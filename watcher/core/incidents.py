"""Incidents: each open condition as on-call work. Pure.

An incident opens with its condition and ends with it. In between it may be
acknowledged (reminders and escalation stop; un-acknowledging resumes them), and
while nobody has acknowledged it, it escalates tier by tier, once per tier. Its id
derives from the condition's key and the event that opened it: every replica and
every restart names it the same, and a condition that opens again later is a new
incident (PagerDuty's ``dedup_key``, the key of a Slack message).

================  ===================================  =====================
state             reached by                           left by
================  ===================================  =====================
open              the condition opens; un-acknowledge  acknowledge, resolve
acknowledged      ``run-watcher ack``                  un-acknowledge, resolve
resolved          the condition closes                 (final)
================  ===================================  =====================
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from watcher.core.conditions import Ack, Condition, Moment, rfc3339_seconds
from watcher.core.events import Event, EventKind, freeze, make_event_id
from watcher.core.statuses import Severity

__all__ = [
    "IncidentError",
    "IncidentState",
    "Tier",
    "acknowledge",
    "due_tiers",
    "find",
    "incident_id",
    "incident_view",
    "lifecycle_event",
    "match_id",
    "state_of",
    "tier_key",
    "unacknowledge",
]


Problem = Literal["unknown", "ambiguous", "invalid", "conflict"]
"""What is wrong with a request about an incident (the API's 404, 400, 400, 409)."""


class IncidentState(StrEnum):
    """Where an incident stands."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class IncidentError(ValueError):
    """An incident that cannot be found, or cannot take the change asked of it."""

    def __init__(self, message: str, problem: Problem = "invalid") -> None:
        super().__init__(message)
        self.problem: Problem = problem


@dataclass(frozen=True, slots=True)
class Tier:
    """An escalation tier: after ``after`` seconds open and unacknowledged, tell
    the notifiers named (by name or tag) in ``notify``."""

    after: float
    notify: tuple[str, ...]


def incident_id(condition: Condition) -> str:
    """The incident's stable id: ``inc_`` and 16 hex digits."""
    digest = hashlib.sha256(f"{condition.key}\x1f{condition.opened.event_id}".encode())
    return "inc_" + digest.hexdigest()[:16]


def state_of(condition: Condition) -> IncidentState:
    """Open or acknowledged (a condition in the book has not resolved)."""
    return IncidentState.OPEN if condition.ack is None else IncidentState.ACKNOWLEDGED


def tier_key(route_id: str, index: int) -> str:
    """How a tier reached is remembered on the condition."""
    return f"{route_id}#{index}"


def summary(condition: Condition) -> str:
    """One line naming what is wrong and where."""
    opened, latest = condition.opened, condition.latest
    what = condition.kind.value.split(".", 1)[-1].replace("_", " ")
    text = f"{opened.watch.display_name}: {what}"
    if opened.subject_id != opened.watch.id:
        text += f" ({opened.subject_id})"
    error = latest.details.get("error") or latest.details.get("error_message")
    if error:
        text += f": {' '.join(str(error).split())[:200]}"
    return text


def incident_view(
    condition: Condition,
    state: IncidentState | None = None,
    *,
    ended: Event | None = None,
    timeline: bool = False,
) -> dict[str, Any]:
    """The incident as events carry it (compact) and the API shows it (with ``timeline``).
    ``ended``: the resolved event."""
    opened = condition.opened
    state = state or (IncidentState.RESOLVED if ended is not None else state_of(condition))
    view: dict[str, Any] = {
        "id": incident_id(condition),
        "key": condition.key,
        "condition": condition.kind.value,
        "state": state.value,
        "summary": summary(condition),
        "severity": min(opened.severity, condition.latest.severity, key=list(Severity).index).value,
        "source": opened.source.value,
        "watch": {"key": opened.watch.key, "name": opened.watch.display_name},
        "subject_id": opened.subject_id,
        "opened_at": rfc3339_seconds(condition.since),
        "opened_event_id": opened.event_id,
        "events": condition.count,
        "acknowledged": condition.ack.as_dict(rfc3339_seconds) if condition.ack else None,
        "escalated": sorted(condition.escalated),
        "url": opened.url,
    }
    if timeline:
        view["timeline"] = [m.as_dict(rfc3339_seconds) for m in condition.timeline]
    if ended is not None:
        view["resolved_at"] = rfc3339_seconds(ended.observed_at)
        view["duration_seconds"] = round(
            max(0.0, (ended.observed_at - condition.since).total_seconds()), 3
        )
    return view


def lifecycle_event(
    condition: Condition,
    kind: EventKind,
    now: datetime,
    *,
    to_status: str,
    details: Mapping[str, Any],
    id_parts: Iterable[object] = (),
    severity: Severity = Severity.INFO,
) -> Event:
    """An event of the incident's own life (acknowledged, escalated, flapping), routed and
    silenced as the event that opened it."""
    opened = condition.opened
    return Event(
        event_id=make_event_id(opened.event_id, kind.value, *id_parts),
        kind=kind,
        severity=severity,
        source=opened.source,
        watch=opened.watch,
        subject_id=opened.subject_id,
        from_status=state_of(condition).value,
        to_status=to_status,
        observed_at=now,
        details=freeze(
            {
                "condition": condition.kind.value,
                "since": rfc3339_seconds(condition.since),
                **details,
            }
        ),
        url=opened.url,
        cause=opened,
        incident=freeze(incident_view(condition)),
    )


def acknowledge(condition: Condition, by: str, note: str | None, now: datetime) -> Condition:
    """``condition`` acknowledged by ``by`` (again, by someone else, updates who has it)."""
    by = by.strip()
    if not by:
        raise IncidentError("say who acknowledges it (--by NAME)")
    return replace(condition, ack=Ack(by, now, note or None)).noted(
        Moment(now, "acknowledged", f"by {by}" + (f": {note}" if note else ""))
    )


def unacknowledge(condition: Condition, now: datetime) -> Condition:
    """``condition`` open again: reminders and escalation resume."""
    if condition.ack is None:
        raise IncidentError(f"incident {incident_id(condition)} is not acknowledged", "conflict")
    return replace(condition, ack=None).noted(Moment(now, "unacknowledged"))


def match_id(ids: Iterable[str], ref: str, missing: str, why: str = "") -> str:
    """The one id of ``ids`` that ``ref`` names, in full or by a unique prefix of at least
    4 characters (``inc_`` optional); ``missing`` says what was looked for when none."""
    ref = ref.strip()
    if len(ref.removeprefix("inc_")) < 4:
        raise IncidentError(f"incident {ref!r}: give at least 4 characters of its id")
    wanted = ref if ref.startswith("inc_") else "inc_" + ref
    found = sorted({i for i in ids if i.startswith(wanted)})
    if not found:
        raise IncidentError(f"no {missing} {ref!r}{why}", "unknown")
    if len(found) > 1:
        raise IncidentError(f"incident {ref!r} is ambiguous: {', '.join(found)}", "ambiguous")
    return found[0]


def find(conditions: Iterable[Condition], ref: str) -> Condition:
    """The open incident named by id or by a unique prefix of it (``inc_`` optional)."""
    by_id = {incident_id(c): c for c in conditions}
    return by_id[match_id(by_id, ref, "open incident", " (unknown, or resolved already)")]


def due_tiers(
    condition: Condition, route_id: str, tiers: Iterable[Tier], now: datetime
) -> list[int]:
    """The indexes of ``tiers`` due for ``condition`` on ``route_id`` at ``now``: open and
    unacknowledged that long, and not sent before."""
    if condition.ack is not None:
        return []
    age = (now - condition.since).total_seconds()
    return [
        i
        for i, tier in enumerate(tiers)
        if age >= tier.after and tier_key(route_id, i) not in condition.escalated
    ]
