"""Planning an incident's own news: escalation tiers, acknowledgements, flapping.

The :class:`~watcher.notify.dispatcher.Dispatcher` plans what events mean for
routes; this part of it plans what an incident's life means for the notifiers
engaged in it (those told it opened, and the escalation tiers it reached). It never
waits and sends nothing: its plans go through the dispatcher's sink like any other.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from watcher.clock import Clock
from watcher.core import flapping, incidents
from watcher.core.conditions import Condition, ConditionBook, Moment
from watcher.core.events import Event, EventKind
from watcher.core.flapping import FlapPolicy, FlapState
from watcher.core.incidents import IncidentError, incident_view, lifecycle_event
from watcher.core.routing import RouteNode, RouteSettings, resolve
from watcher.core.silences import Silence, silenced_by
from watcher.core.statuses import Severity
from watcher.notify.channel import NotifierChannel
from watcher.notify.serialize import condition_to_dict

__all__ = [
    "INCIDENT_ROUTE",
    "RESOLVED_KEPT",
    "Delivery",
    "IncidentPlanner",
    "Plan",
    "Sink",
    "keeps_incidents",
]

_SEVERITY_RANK = list(Severity).index

INCIDENT_ROUTE = RouteNode(
    "incident", settings=RouteSettings(notify=None, group_wait=0.0, group_interval=0.0)
)
"""The route of an incident's own news to the notifiers engaged in it."""
RESOLVED_KEPT = 500
"""Resolved incidents listed by ``run-watcher incidents`` (the latest)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event owed to one notifier, on one route."""

    event: Event
    channel: NotifierChannel
    route: RouteNode


@dataclass
class Plan:
    """What publishing a batch will do: deliveries, and condition changes to store."""

    deliveries: list[Delivery] = field(default_factory=list)
    conditions: dict[str, dict[str, Any] | None] = field(default_factory=dict)


Sink = Callable[[Plan], Awaitable[None]]


def keeps_incidents(channel: NotifierChannel) -> bool:
    """Whether a channel's notifier keeps incidents (a page, a Slack message edited in
    place): it hears of each incident's acknowledgement and end, whatever the routes say."""
    return bool(getattr(channel.notifier, "incidents", False))


class IncidentPlanner:
    """The dispatcher's incident half (a mixin: it plans with the dispatcher's parts)."""

    clock: Clock
    conditions: ConditionBook
    routes: tuple[RouteNode, ...]
    silences: tuple[Silence, ...]
    channels: list[NotifierChannel]
    resolved: deque[dict[str, Any]]
    flap_policy: FlapPolicy | None
    flaps: dict[str, FlapState]
    _sink: Sink

    def _plan_event(
        self,
        plan: Plan,
        event: Event,
        routes: Sequence[RouteNode],
        exclude: NotifierChannel | None = None,
        *,
        silenceable: bool = True,
    ) -> list[NotifierChannel]:
        raise NotImplementedError

    def channel_by_id(self, channel_id: str) -> NotifierChannel | None:
        raise NotImplementedError

    def _plan_to(self, plan: Plan, event: Event, channels: Iterable[NotifierChannel]) -> None:
        """``event`` to ``channels`` at once, on the incident route (no silence applies)."""
        for channel in dict.fromkeys(channels):
            plan.deliveries.append(Delivery(event, channel, INCIDENT_ROUTE))

    def _engaged(self, condition: Condition, incidents_only: bool = False) -> list[NotifierChannel]:
        found = [c for cid in condition.engaged if (c := self.channel_by_id(cid)) is not None]
        return [c for c in found if keeps_incidents(c)] if incidents_only else found

    def _keep(self, plan: Plan, condition: Condition) -> None:
        self.conditions.open[condition.key] = condition
        plan.conditions[condition.key] = condition_to_dict(condition)

    def _flap(self, key: str, opened: bool, now: datetime) -> tuple[bool, bool]:
        """Account an open or close of ``key``: (held back, flapping starts now)."""
        if self.flap_policy is None:
            return False, False
        state, starts = flapping.on_change(
            self.flaps.get(key, FlapState()), opened, now, self.flap_policy
        )
        self.flaps[key] = state
        return state.flapping, starts

    # -- incidents ----------------------------------------------------------------------

    def _is_flapping(self, key: str) -> bool:
        state = self.flaps.get(key)
        return state is not None and state.flapping

    def _plan_escalations(self, plan: Plan, condition: Condition, now: datetime) -> None:
        """Tiers due for ``condition``: each sent once, to its notifiers and the engaged."""
        if silenced_by(self.silences, condition.opened, now) is not None:
            return  # a silenced incident does not escalate (and so no tier is spent)
        for route in resolve(self.routes, condition.opened):
            tiers = route.settings.escalate
            for index in incidents.due_tiers(condition, route.id, tiers, now):
                tier = tiers[index]
                targets = self._named(tier.notify)
                condition = replace(
                    condition,
                    escalated=condition.escalated | {incidents.tier_key(route.id, index)},
                    engaged=tuple(dict.fromkeys([*condition.engaged, *(c.id for c in targets)])),
                ).noted(Moment(now, "escalated", f"tier {index + 1}: {', '.join(tier.notify)}"))
                event = lifecycle_event(
                    condition,
                    EventKind.INCIDENT_ESCALATED,
                    now,
                    to_status="escalated",
                    details={"tier": index + 1, "notify": list(tier.notify), "route": route.id},
                    id_parts=(route.id, index),
                    severity=min(condition.opened.severity, Severity.WARNING, key=_SEVERITY_RANK),
                )
                self._plan_to(plan, event, [*targets, *self._engaged(condition, True)])
                self._keep(plan, condition)

    def _named(self, names: Sequence[str]) -> list[NotifierChannel]:
        wanted = set(names)
        return [c for c in self.channels if c.name in wanted or c.id in wanted or c.tags & wanted]

    def _plan_flapping(self, plan: Plan, condition: Condition, now: datetime) -> None:
        policy = self.flap_policy
        assert policy is not None
        event = lifecycle_event(
            condition,
            EventKind.INCIDENT_FLAPPING,
            now,
            to_status="flapping",
            details={
                "opens": policy.opens + 1,
                "window_seconds": policy.window,
                "quiet_seconds": policy.quiet,
                "message": "opening and resolved messages are held until it settles",
            },
            id_parts=(now.isoformat(),),
            severity=Severity.WARNING,
        )
        self._plan_event(plan, event, resolve(self.routes, condition.opened))

    def _plan_settled(self, plan: Plan, now: datetime) -> None:
        """Flapping conditions quiet for long enough: one message saying where they settled."""
        policy = self.flap_policy
        if policy is None:
            return
        for key, state in list(self.flaps.items()):
            if flapping.stale(state, now, policy):
                del self.flaps[key]
            if not flapping.settled(state, now, policy):
                continue
            del self.flaps[key]
            condition = self.conditions.open.get(key)
            if condition is None:
                continue  # settled resolved: its last resolved message was held; nothing is open
            event = lifecycle_event(
                condition,
                EventKind.INCIDENT_FLAPPING,
                now,
                to_status="settled",
                details={"now": "open", "message": "stopped flapping; still open"},
                id_parts=("settled", now.isoformat()),
                severity=condition.opened.severity,
            )
            reached = self._plan_event(plan, event, resolve(self.routes, condition.opened))
            engaged = tuple(dict.fromkeys([*condition.engaged, *(c.id for c in reached)]))
            self._keep(plan, replace(condition, engaged=engaged))

    def incident(self, ref: str) -> Condition:
        """The open incident named by id or unique prefix; a clear error otherwise."""
        try:
            return incidents.find(self.conditions.open.values(), ref)
        except IncidentError as missing:
            if missing.problem != "unknown":
                raise
            done = {str(v["id"]): v for v in self.resolved}
            try:
                found = done[incidents.match_id(done, ref, "incident")]
            except IncidentError:
                raise missing from None
            raise IncidentError(
                f"incident {found['id']} is resolved (at {found['resolved_at']})", "conflict"
            ) from None

    def plan_ack(
        self, ref: str, by: str, note: str | None, now: datetime
    ) -> tuple[Plan, Condition]:
        """Acknowledge an open incident: reminders and escalation stop; the engaged hear it."""
        condition = incidents.acknowledge(self.incident(ref), by, note, now)
        event = lifecycle_event(
            condition,
            EventKind.INCIDENT_ACKNOWLEDGED,
            now,
            to_status="acknowledged",
            details={"by": by, "note": note},
            id_parts=(by, now.isoformat()),
        )
        plan = Plan()
        self._keep(plan, condition)
        self._plan_to(plan, event, self._engaged(condition))
        return plan, condition

    def plan_unack(self, ref: str, now: datetime) -> tuple[Plan, Condition]:
        """Take an acknowledgement back: reminders and escalation resume."""
        condition = incidents.unacknowledge(self.incident(ref), now)
        event = lifecycle_event(
            condition,
            EventKind.INCIDENT_UNACKNOWLEDGED,
            now,
            to_status="open",
            details={},
            id_parts=("unack", now.isoformat()),
            severity=condition.opened.severity,
        )
        plan = Plan()
        self._keep(plan, condition)
        self._plan_to(plan, event, self._engaged(condition))
        return plan, condition

    def poke(self) -> None:
        raise NotImplementedError

    async def acknowledge(self, ref: str, by: str, note: str | None = None) -> dict[str, Any]:
        """Acknowledge (persisted, then told to the engaged); the incident's view."""
        plan, condition = self.plan_ack(ref, by, note, self.clock.wall())
        await self._sink(plan)
        return incident_view(condition, timeline=True)

    async def unacknowledge(self, ref: str) -> dict[str, Any]:
        """Un-acknowledge; the incident's view."""
        plan, condition = self.plan_unack(ref, self.clock.wall())
        await self._sink(plan)
        self.poke()  # reminders and escalation may be due at once
        return incident_view(condition, timeline=True)

    def incidents(self, open_only: bool = False) -> list[dict[str, Any]]:
        """Open incidents, oldest first, then (unless ``open_only``) the latest resolved."""
        views = [
            incident_view(c, timeline=True)
            for c in sorted(self.conditions.open.values(), key=lambda c: c.since)
        ]
        for view in views:
            view["flapping"] = self._is_flapping(str(view["key"]))
        if not open_only:
            views.extend(reversed(self.resolved))
        return views
