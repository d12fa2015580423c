"""The notification pipeline's hub: conditions, silences, routes, reminders, channels.

Publishing a batch of events happens in two halves. :meth:`Dispatcher.plan` feeds
the condition book (which may close conditions: resolved messages), drops
silenced events (counted and logged) and resolves the route tree into deliveries,
one per (event, notifier); it never waits. The sink (the daemon's outbox) persists
that plan and then :meth:`Dispatcher.apply` hands the deliveries to the notifier
channels. So nothing is sent before it is written down; the dispatcher's own plans
(reminders, broadcasts, heartbeats) go through the same sink.

A ticker sends reminders for open conditions on routes with ``repeat_interval``,
resolved messages go to routes with ``send_resolved`` that matched the event that
opened the condition, and when a notifier gives up on a message, every other
notifier gets a ``notifier.failed`` event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from watcher.clock import Clock
from watcher.core import incidents
from watcher.core.conditions import Condition, ConditionBook, Moment, reminder_event
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze, make_event_id
from watcher.core.flapping import FlapPolicy, FlapState
from watcher.core.incidents import incident_view
from watcher.core.routing import RouteNode, RouteSettings, resolve
from watcher.core.silences import Silence, silenced_by
from watcher.core.statuses import Severity, Source
from watcher.notify.channel import NotifierChannel, SendLog
from watcher.notify.incident_plans import (
    RESOLVED_KEPT,
    Delivery,
    IncidentPlanner,
    Plan,
    Sink,
)
from watcher.notify.serialize import condition_to_dict

__all__ = ["DEFAULT_ROUTE", "Delivery", "Dispatcher", "Plan", "watcher_event"]


log = structlog.get_logger("watcher.notify")

_MIN_TICK, _MAX_TICK = 1.0, 60.0
_MIN_SLEEP = 0.05
_BROADCAST = RouteNode("broadcast", settings=RouteSettings(notify=None))
DEFAULT_ROUTE = RouteNode(
    "restored", settings=RouteSettings(notify=None, group_wait=0.0, group_interval=0.0)
)
"""The route of an outbox entry whose route no longer exists."""
_DEFAULT_FLAPS = FlapPolicy()


def _tick(routes: Sequence[RouteNode]) -> float:
    """How often to look for due reminders: a fraction of the shortest repeat interval."""
    intervals: list[float] = []

    def walk(nodes: Sequence[RouteNode]) -> None:
        for node in nodes:
            if node.settings.repeat_interval:
                intervals.append(node.settings.repeat_interval)
            intervals.extend(t.after for t in node.settings.escalate if t.after > 0)
            walk(node.children)

    walk(routes)
    return min(_MAX_TICK, max(_MIN_TICK, min(intervals, default=_MAX_TICK) / 10))


def watcher_event(
    kind: EventKind,
    severity: Severity,
    subject: str,
    now: datetime,
    details: dict[str, Any],
    *id_parts: object,
) -> Event:
    """An event about the watcher itself (its notifiers, its state file)."""
    return Event(
        event_id=make_event_id(kind, subject, *id_parts),
        kind=kind,
        severity=severity,
        source=Source.WATCHER,
        watch=WatchRef(WatchType.WATCHER, "run-watcher", "run-watcher"),
        subject_id=subject,
        from_status=details.pop("from", None),
        to_status=details.pop("to", kind.value.split(".")[-1]),
        observed_at=now,
        details=freeze(details),
    )


class Dispatcher(IncidentPlanner):
    """Plans deliveries, runs the notifier channels and the reminder ticker."""

    def __init__(
        self,
        routes: Sequence[RouteNode],
        clock: Clock,
        *,
        sink: Sink,
        silences: Sequence[Silence] = (),
        channels: Sequence[NotifierChannel] = (),
        flaps: FlapPolicy | None = _DEFAULT_FLAPS,
    ) -> None:
        self.clock = clock
        self.conditions = ConditionBook()
        self.resolved: deque[dict[str, Any]] = deque(maxlen=RESOLVED_KEPT)
        """Views of the latest resolved incidents, newest last."""
        self.flap_policy = flaps
        self.flaps: dict[str, FlapState] = {}
        self.held = 0
        """Opening and resolved messages held back while their condition flapped."""
        self.unrouted = 0
        self.silenced = 0
        self.undelivered: dict[str, list[str]] = {}
        self._reminded: dict[tuple[str, str], tuple[datetime, int]] = {}
        self._sink = sink
        self._poked = anyio.Event()
        self._tg: TaskGroup | None = None
        self._closed = anyio.Event()
        self.channels: list[NotifierChannel] = []
        self.sends: SendLog | None = None
        """A cluster's notification log, handed to every channel (set before configure)."""
        self.configure(routes, silences, channels)

    # -- configuration -------------------------------------------------------------------

    def configure(
        self,
        routes: Sequence[RouteNode],
        silences: Sequence[Silence],
        channels: Sequence[NotifierChannel],
    ) -> None:
        """Install routes, silences and channels (at start, and on reload).

        Channels that are no longer listed are closed: they send what they hold
        and stop. New ones start at once when the dispatcher is running.
        """
        self.routes = tuple(routes)
        self.silences = tuple(silences)
        self._tick = _tick(self.routes)
        gone = [c for c in self.channels if c not in channels]
        new = [c for c in channels if c not in self.channels]
        self.channels = list(channels)
        for channel in self.channels:
            channel.sends = self.sends
        for channel in gone:
            channel.close()
        if self._tg is not None:
            for channel in new:
                self._tg.start_soon(channel.run)

    def route_by_id(self, route_id: str) -> RouteNode | None:
        """The route with this id in the current tree, if it still exists."""

        def walk(nodes: Sequence[RouteNode]) -> RouteNode | None:
            for node in nodes:
                if node.id == route_id:
                    return node
                if (found := walk(node.children)) is not None:
                    return found
            return None

        return walk(self.routes)

    def channel_by_id(self, channel_id: str) -> NotifierChannel | None:
        """The channel with this stable id, if it still exists."""
        return next((c for c in self.channels if c.id == channel_id), None)

    # -- planning ------------------------------------------------------------------------

    def _targets(self, route: RouteNode) -> list[NotifierChannel]:
        notify = route.settings.notify
        if notify is None:
            return list(self.channels)
        wanted = set(notify)
        return [c for c in self.channels if c.tags & wanted]

    def _silenced(self, event: Event) -> bool:
        silence = silenced_by(self.silences, event, self.clock.wall())
        if silence is None:
            return False
        self.silenced += 1
        log.info(
            "event silenced",
            silence=silence.id,
            comment=silence.comment,
            event_id=event.event_id,
            kind=event.kind.value,
            subject_id=event.subject_id,
        )
        return True

    def _plan_event(
        self,
        plan: Plan,
        event: Event,
        routes: Sequence[RouteNode],
        exclude: NotifierChannel | None = None,
        *,
        silenceable: bool = True,
    ) -> list[NotifierChannel]:
        if silenceable and self._silenced(event):
            return []
        reached: dict[int, NotifierChannel] = {}
        for route in routes:
            for channel in self._targets(route):
                if channel is not exclude and id(channel) not in reached:
                    reached[id(channel)] = channel
                    plan.deliveries.append(Delivery(event, channel, route))
        if not reached:
            self.unrouted += 1
            log.debug("event reached no notifier", event_id=event.event_id, kind=event.kind.value)
        return list(reached.values())

    def plan(self, events: Sequence[Event]) -> Plan:
        """Account for ``events`` and decide who gets what (never waits, sends nothing)."""
        plan = Plan()
        for event in events:
            closed = self.conditions.observe(event)
            touched = self.conditions.last_touched
            condition = self.conditions.open.get(touched) if touched is not None else None
            held = False
            if condition is not None:
                event = replace(event, incident=freeze(incident_view(condition)))
                if condition.count == 1:
                    held, starts = self._flap(condition.key, True, event.observed_at)
                    if starts:
                        self._plan_flapping(plan, condition, event.observed_at)
            elif closed:
                # The event that ended an incident says so (a Slack thread reply, not a page).
                first, ended = closed[0]
                event = replace(event, incident=freeze(incident_view(first, ended=ended)))
            elif (related := self._related(event)) is not None:
                # News of a subject with an open incident (a failing group's progress)
                # belongs to it: a reply in its Slack thread, not a post of its own.
                event = replace(event, incident=freeze(incident_view(related)))
            if held:
                self.held += 1
            else:
                reached = self._plan_event(plan, event, resolve(self.routes, event.origin))
                if condition is not None and reached:
                    engaged = tuple(dict.fromkeys([*condition.engaged, *(c.id for c in reached)]))
                    condition = replace(condition, engaged=engaged)
                    self.conditions.open[condition.key] = condition
            for gone, resolved in closed:
                self._resolve(plan, gone, resolved)
            if condition is not None:
                plan.conditions[condition.key] = condition_to_dict(condition)
                if condition.count == 1:
                    self.poke()
        return plan

    def _related(self, event: Event) -> Condition | None:
        """The open condition of ``event``'s own subject, if any."""
        prefix = f"{event.watch.key}#{event.subject_id}#"
        for suffix in (
            "failing",
            "stuck",
            "action_required",
            "deadline:total",
            "deadline:running",
            "deadline:queued",
        ):
            if (found := self.conditions.open.get(prefix + suffix)) is not None:
                return found
        return None

    def _resolve(self, plan: Plan, condition: Condition, resolved: Event) -> None:
        """``condition`` closed: its resolved message, and its incident's end everywhere."""
        plan.conditions[condition.key] = None
        for route in resolve(self.routes, condition.opened):
            self._reminded.pop((route.id, condition.key), None)
        condition = condition.noted(
            Moment(resolved.observed_at, "resolved", resolved.details.get("now") or "")
        )
        self.resolved.append(incident_view(condition, ended=resolved, timeline=True))
        resolved = replace(resolved, incident=freeze(incident_view(condition, ended=resolved)))
        held, _ = self._flap(condition.key, False, resolved.observed_at)
        if held:
            self.held += 1
            return
        reached: list[NotifierChannel] = []
        if condition.kind.resolvable:
            routes = [r for r in resolve(self.routes, condition.opened) if r.settings.send_resolved]
            if routes:
                reached = self._plan_event(plan, resolved, routes)
        # Those that hold the incident open (a page, a Slack message) hear its end always.
        self._plan_to(
            plan, resolved, [c for c in self._engaged(condition, True) if c not in reached]
        )

    def apply(self, plan: Plan) -> None:
        """Hand a (persisted) plan's deliveries to the channels."""
        for d in plan.deliveries:
            d.channel.accept(d.event, d.route)

    # -- reminders ----------------------------------------------------------------------

    def plan_reminders(self, now: datetime) -> Plan:
        """What is due at ``now``: reminders (one per open, unacknowledged condition and route
        with repeat_interval), escalation tiers, and flapping that settled."""
        plan = Plan()
        for condition in list(self.conditions.open.values()):
            if condition.ack is not None or self._is_flapping(condition.key):
                continue
            self._plan_escalations(plan, condition, now)
            for route in resolve(self.routes, condition.opened):
                every = route.settings.repeat_interval
                if not every:
                    continue
                key = (route.id, condition.key)
                last, number = self._reminded.get(key, (condition.since, 0))
                if (now - last).total_seconds() < every:
                    continue
                self._reminded[key] = (now, number + 1)
                current = self.conditions.open[condition.key]
                reminder = reminder_event(current, now, number + 1)
                self._plan_event(
                    plan, replace(reminder, incident=freeze(incident_view(current))), [route]
                )
        self._plan_settled(plan, now)
        return plan

    def next_due(self, now: datetime) -> float | None:
        """Seconds from ``now`` until the next reminder, escalation tier or flapping check
        is due (never negative); None when nothing is."""
        dues: list[datetime] = []
        for condition in self.conditions.open.values():
            if condition.ack is not None or self._is_flapping(condition.key):
                continue
            silenced = silenced_by(self.silences, condition.opened, now) is not None
            for route in resolve(self.routes, condition.opened):
                s = route.settings
                if s.repeat_interval:
                    last, _ = self._reminded.get((route.id, condition.key), (condition.since, 0))
                    dues.append(last + timedelta(seconds=s.repeat_interval))
                if s.escalate and not silenced:  # a silence's end is caught by the tick
                    fired = condition.escalated
                    dues += [
                        condition.since + timedelta(seconds=t.after)
                        for i, t in enumerate(s.escalate)
                        if incidents.tier_key(route.id, i) not in fired
                    ]
        if self.flap_policy is not None:
            quiet = timedelta(seconds=self.flap_policy.quiet)
            dues += [
                f.last_change + quiet for f in self.flaps.values() if f.flapping and f.last_change
            ]
        if not dues:
            return None
        return max(0.0, (min(dues) - now).total_seconds())

    def poke(self) -> None:
        """Something may be due sooner (a condition opened, an incident was acknowledged)."""
        self._poked.set()

    async def _ticker(self) -> None:
        while True:
            due = self.next_due(self.clock.wall())
            # Due times to the moment, within a floor (no spinning) and the periodic tick.
            timeout = self._tick if due is None else min(self._tick, max(_MIN_SLEEP, due))
            self._poked = anyio.Event()
            with anyio.move_on_after(timeout):
                await self._poked.wait()
            plan = self.plan_reminders(self.clock.wall())
            if plan.deliveries or plan.conditions:
                await self._sink(plan)

    def restore_conditions(self, conditions: Sequence[Condition]) -> None:
        """Open conditions read back from the state file."""
        for condition in conditions:
            self.conditions.open[condition.key] = condition
        self.poke()

    # -- the watcher's own events -------------------------------------------------------

    async def broadcast(self, event: Event, exclude: NotifierChannel | None = None) -> None:
        """Send an event about the watcher itself to every notifier (routes do not apply)."""
        plan = Plan()
        self._plan_event(plan, event, [_BROADCAST], exclude=exclude)
        if plan.deliveries:
            await self._sink(plan)

    async def heartbeat(self, event: Event, tags: Sequence[str]) -> int:
        """Send a heartbeat to the notifiers with ``tags``, at once: no route, grouping or
        silence applies (a dead-man's switch that a silence could mute would lie)."""
        route = RouteNode(
            "heartbeat",
            settings=RouteSettings(notify=tuple(tags), group_wait=0.0, group_interval=0.0),
        )
        plan = Plan()
        plan.deliveries = [Delivery(event, channel, route) for channel in self._targets(route)]
        if plan.deliveries:
            await self._sink(plan)
        return len(plan.deliveries)

    async def notifier_failed(
        self, channel: NotifierChannel, events: Sequence[Event], detail: str
    ) -> None:
        """``channel`` gave up on ``events``: a ``notifier.failed`` to every other notifier."""
        event = watcher_event(
            EventKind.NOTIFIER_FAILED,
            Severity.FAILURE,
            channel.name,
            self.clock.wall(),
            {
                "from": "ok",
                "to": "failing",
                "notifier": channel.name,
                "undeliverable": len(events),
                "error": detail,
                "event_ids": [e.event_id for e in events[:20]],
            },
            events[0].event_id if events else self.clock.wall(),
        )
        await self.broadcast(event, exclude=channel)

    # -- running ------------------------------------------------------------------------

    def close(self) -> None:
        """No more events: every channel sends what it holds and stops."""
        self._closed.set()
        for channel in self.channels:
            channel.close()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the channels and the ticker until :meth:`close` and every channel drained.

        When cancelled (the shutdown deadline), what is still pending or in
        flight is kept in :attr:`undelivered` for the shutdown report.
        """
        try:
            async with anyio.create_task_group() as channels:
                self._tg = channels
                for channel in self.channels:
                    channels.start_soon(channel.run)
                async with anyio.create_task_group() as ticker_group:
                    ticker_group.start_soon(self._ticker)
                    task_status.started()
                    await self._closed.wait()
                    ticker_group.cancel_scope.cancel()
        finally:
            self._tg = None
            self.undelivered = {c.name: ids for c in self.channels if (ids := c.leftovers())}
