"""PagerDuty's Events API v2, natively: trigger, acknowledge and resolve by ``dedup_key``.

apprise's PagerDuty plugin can only trigger (no dedup key, no acknowledge, no
resolve): every page stays open until closed by hand. This sender keeps each
incident's page: ``trigger`` once when it opens (``dedup_key`` = the incident id),
``acknowledge`` when someone acknowledges it in run-watcher, ``resolve`` when it
ends. An event outside any incident that is a failure or a warning (a run that
failed) is a page of its own, keyed by its event id.

Answers (PagerDuty's "Response Codes & Retry Logic"): 202 accepted; 400 the event is
invalid, not retried, except a refused routing key, which is kept for retry after
one warning (the key may be fixed); 429 and 5xx retried with backoff. The API takes
about 120 events a minute per routing key: a token bucket paces this sender below
that, whatever else the channel allows.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import httpx
import structlog

from watcher.clock import Clock, SystemClock
from watcher.core import budget
from watcher.core.budget import BudgetPolicy
from watcher.core.events import Event, EventKind
from watcher.core.statuses import Severity
from watcher.notify.apprise_sender import DeliveryResult
from watcher.notify.incident_refs import IncidentRefs, MemoryRefs
from watcher.notify.render import Message, default_title

__all__ = ["EVENTS_URL", "PagerDutyNotifier", "pagerduty_event", "routing_key_problem"]

log = structlog.get_logger("watcher.notify")

EVENTS_URL = "https://events.pagerduty.com"
_PATH = "/v2/enqueue"
_SEVERITY = {
    Severity.FAILURE: "error",
    Severity.WARNING: "warning",
    Severity.SUCCESS: "info",
    Severity.INFO: "info",
}
_RATE = BudgetPolicy(rate=100 / 60.0, burst=20)
"""Below PagerDuty's ~120 a minute per routing key, with room for a burst."""
_MAX_WAIT = 30.0

Action = Literal["trigger", "acknowledge", "resolve"]
_TRIGGERS = frozenset({EventKind.INCIDENT_ESCALATED, EventKind.INCIDENT_FLAPPING})
"""Incident news that pages a notifier not yet paged: an escalation tier reached, a
flapping condition settled open."""


def _action(event: Event) -> tuple[Action, str] | None:
    """What ``event`` asks of PagerDuty, and the ``dedup_key``; None: nothing."""
    incident = event.incident
    if incident is None:
        if event.severity in (Severity.FAILURE, Severity.WARNING):
            return "trigger", event.event_id
        return None
    key = str(incident["id"])
    state = incident.get("state")
    match event.kind:
        case EventKind.CONDITION_RESOLVED:
            return "resolve", key
        case EventKind.INCIDENT_ACKNOWLEDGED:
            return "acknowledge", key
        case EventKind.INCIDENT_UNACKNOWLEDGED | EventKind.CONDITION_REMINDER:
            return None  # PagerDuty has no un-acknowledge, and re-notifies by itself
        case EventKind.INCIDENT_FLAPPING if event.to_status == "flapping":
            return None
    if state == "resolved":
        return None  # the event that ended it (group.finished): its resolve follows
    opens = event.event_id == incident.get("opened_event_id")
    if opens or event.kind in _TRIGGERS or event.severity in (Severity.FAILURE, Severity.WARNING):
        return "trigger", key  # a page already triggered is not triggered again
    return None  # news of the incident that is no page (a failing group's progress)


def pagerduty_event(event: Event, *, source: str | None = None) -> dict[str, Any] | None:
    """The Events API v2 body for ``event``, without its ``routing_key``; None: nothing to send."""
    found = _action(event)
    if found is None:
        return None
    action, dedup_key = found
    body: dict[str, Any] = {"event_action": action, "dedup_key": dedup_key}
    if action != "trigger":
        return body
    origin = event.origin
    d = event.details
    incident: Mapping[str, Any] = event.incident or {}
    # A page is named by what opened it, whatever later event sends its trigger.
    summary = default_title(origin if incident else event)
    details: dict[str, Any] = {
        "watch": event.watch.key,
        "subject": event.subject_id,
        "status": event.to_status,
        "event_kind": event.kind.value,
        "event_id": event.event_id,
    }
    for name in ("task", "error", "error_message", "attempt", "environment", "version"):
        if (value := d.get(name) or origin.details.get(name)) is not None:
            details[name] = value
    if event.watch.labels:
        details["labels"] = dict(event.watch.labels)
    if incident:
        details["incident"] = incident.get("id")
        details["acknowledge"] = f"run-watcher ack {incident.get('id')} --by NAME"
        if event.kind is EventKind.INCIDENT_ESCALATED:
            details["escalated_tier"] = d.get("tier")
    body["payload"] = {
        "summary": summary[:1024],
        "source": source or event.watch.key,
        "severity": _SEVERITY[min(origin.severity, event.severity, key=list(Severity).index)],
        "timestamp": origin.observed_at.isoformat(timespec="milliseconds"),
        "component": str(d.get("task") or event.watch.display_name),
        "group": event.watch.display_name,
        "class": str(incident.get("condition") or event.kind.value),
        "custom_details": details,
    }
    body["client"] = "run-watcher"
    if event.url:
        body["client_url"] = event.url
        body["links"] = [{"href": event.url, "text": f"{event.source.value} {event.subject_id}"}]
    return body


class PagerDutyNotifier:
    """Sends each event of a message as its Events API v2 action, in order."""

    incidents = True

    def __init__(
        self,
        routing_key: str,
        *,
        name: str,
        ref_id: str,
        timeout: float,
        url: str = EVENTS_URL,
        source: str | None = None,
        refs: IncidentRefs | None = None,
        scrub: Callable[[str], str] = str,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self._key = routing_key
        self._ref_id = ref_id
        self._endpoint = url.rstrip("/") + _PATH
        self._source = source
        self._refs = refs or MemoryRefs()
        self._scrub = scrub
        self._clock = clock or SystemClock()
        self._timeout = timeout
        self._transport = transport
        self._bucket = budget.full(_RATE, self._clock.now())
        self._warned = False
        self.requests = 0

    async def send(self, message: Message) -> DeliveryResult:
        """One Events API call per event that asks for one; the first failure ends the try
        (a retry sends the events again: PagerDuty deduplicates by ``dedup_key``)."""
        started = time.monotonic()
        sent = 0
        bodies = [pagerduty_event(e, source=self._source) for e in message.events]
        if not message.events:
            bodies = _test_page(message, self._source)
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout, connect=min(5.0, self._timeout)),
            transport=self._transport,
            trust_env=False,
        ) as client:
            for body in bodies:
                if body is None:
                    continue
                incident = str(body["dedup_key"])
                if body["event_action"] == "trigger" and await self._triggered(incident):
                    continue
                result = await self._post(client, body)
                if not result.ok:
                    return result
                sent += 1
                if body["event_action"] == "trigger":
                    await self._refs.put(self._ref_id, incident, {"triggered": True})
        return DeliveryResult(
            True, "SUCCESS", f"{sent} events accepted", time.monotonic() - started
        )

    async def _triggered(self, dedup_key: str) -> bool:
        return bool((await self._refs.get(self._ref_id, dedup_key) or {}).get("triggered"))

    async def _pace(self) -> None:
        """Wait for a token of the routing key's budget (bounded)."""
        now = self._clock.now()
        wait = min(budget.wait_time(self._bucket, _RATE, now), _MAX_WAIT)
        if wait > 0:
            await self._clock.sleep(wait)
        self._bucket, _ = budget.take(self._bucket, _RATE, self._clock.now())

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> DeliveryResult:
        await self._pace()
        # Scrubbed before the key goes in: the key is itself a registered secret.
        payload = json.loads(self._scrub(json.dumps(body)))
        payload["routing_key"] = self._key
        self.requests += 1
        try:
            response = await client.post(self._endpoint, json=payload)
        except httpx.HTTPError as exc:
            return DeliveryResult(False, "ERROR", self._scrub(f"{type(exc).__name__}: {exc}"))
        status = response.status_code
        if status == 202:
            self._warned = False
            return DeliveryResult(True, "SUCCESS")
        detail = f"PagerDuty answered HTTP {status}: {self._reason(response)}"[:500]
        if status == 400 and "routing" in detail.lower():
            return self._refused(detail)
        if status in (401, 403, 404):
            return self._refused(detail)
        if status == 400:
            return DeliveryResult(False, "REJECTED", detail, permanent=True)
        retry_after = _retry_after(response.headers.get("retry-after"))
        return DeliveryResult(False, "RETRY", detail, retry_after=retry_after)

    def _refused(self, detail: str) -> DeliveryResult:
        """A refused routing key: warn once, keep the event for retry (it may be fixed)."""
        if not self._warned:
            self._warned = True
            log.warning(
                "PagerDuty refused the routing key; events are kept and retried",
                notifier=self.name,
                detail=detail,
            )
        return DeliveryResult(False, "REFUSED", detail)

    def _reason(self, response: httpx.Response) -> str:
        try:
            data = response.json()
        except ValueError:
            return self._scrub(" ".join(response.text.split())[:300]) or "(no body)"
        if isinstance(data, dict):
            parts = [str(data.get("message") or data.get("status") or "")]
            errors = data.get("errors")
            if isinstance(errors, list):
                parts += [str(e) for e in errors[:5]]
            return self._scrub("; ".join(p for p in parts if p))
        return self._scrub(str(data)[:300])


def _test_page(message: Message, source: str | None) -> list[dict[str, Any] | None]:
    """``test-notify``: a page of severity info, resolved at once (the routing key works)."""
    key = f"run-watcher-test-{secrets.token_hex(6)}"
    return [
        {
            "event_action": "trigger",
            "dedup_key": key,
            "payload": {
                "summary": message.title[:1024],
                "source": source or "run-watcher",
                "severity": "info",
                "custom_details": {"message": message.body},
            },
            "client": "run-watcher",
        },
        {"event_action": "resolve", "dedup_key": key},
    ]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def routing_key_problem(key: str) -> str | None:
    """Why a routing key cannot be right, before any request; None if it looks right."""
    if not key:
        return "the routing key is empty"
    if len(key) != 32 or not key.isalnum():
        return "a routing key is the 32-character integration key of an Events API v2 integration"
    return None
