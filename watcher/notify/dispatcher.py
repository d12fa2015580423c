"""The notification pipeline's hub: silences, conditions, routes, reminders, channels.

A router task takes events from the pollers and, without ever waiting:

1. feeds the condition book (which may close conditions: resolved messages);
2. drops silenced events, counting and logging them;
3. resolves the route tree and hands the event to each route's notifiers
   (each notifier at most once per event).

A ticker sends reminders for open conditions on routes with ``repeat_interval``,
and resolved messages go to routes with ``send_resolved`` that matched the event
that opened the condition. When a notifier gives up on a message, the other
notifiers get a ``notifier.failed`` event, so a broken Slack token is noticed by
email.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from watcher.clock import Clock
from watcher.core.conditions import Condition, ConditionBook, reminder_event
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze, make_event_id
from watcher.core.routing import RouteNode, RouteSettings, resolve
from watcher.core.silences import Silence, silenced_by
from watcher.core.statuses import Severity, Source
from watcher.notify.channel import NotifierChannel

__all__ = ["Dispatcher"]

log = structlog.get_logger("watcher.notify")

_MIN_TICK, _MAX_TICK = 1.0, 60.0
_BROADCAST = RouteNode("notifier.failed", settings=RouteSettings(notify=None))


def _tick(routes: Sequence[RouteNode]) -> float:
    """How often to look for due reminders: a fraction of the shortest repeat interval."""
    intervals: list[float] = []

    def walk(nodes: Sequence[RouteNode]) -> None:
        for node in nodes:
            if node.settings.repeat_interval:
                intervals.append(node.settings.repeat_interval)
            walk(node.children)

    walk(routes)
    return min(_MAX_TICK, max(_MIN_TICK, min(intervals, default=_MAX_TICK) / 10))


class Dispatcher:
    """Routes events to notifier channels and runs them."""

    def __init__(
        self,
        routes: Sequence[RouteNode],
        channels: Sequence[NotifierChannel],
        clock: Clock,
        *,
        silences: Sequence[Silence] = (),
    ) -> None:
        self.routes = tuple(routes)
        self.channels = list(channels)
        self.clock = clock
        self.silences = tuple(silences)
        self.conditions = ConditionBook()
        self.unrouted = 0
        self.silenced = 0
        self.undelivered: dict[str, list[str]] = {}
        self._reminded: dict[tuple[str, str], tuple[datetime, int]] = {}
        self._tick = _tick(self.routes)
        for channel in self.channels:
            channel.on_undeliverable = self._notifier_failed

    # -- routing ------------------------------------------------------------------------

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

    def route(self, event: Event) -> None:
        """Account for ``event`` and queue it for its notifiers (never waits)."""
        closed = self.conditions.observe(event)
        self._deliver(event, resolve(self.routes, event.origin))
        for condition, resolved in closed:
            self._resolved(condition, resolved)

    def _deliver(
        self, event: Event, routes: Sequence[RouteNode], exclude: NotifierChannel | None = None
    ) -> None:
        if self._silenced(event):
            return
        reached: set[int] = set()
        for route in routes:
            for channel in self._targets(route):
                if channel is not exclude and id(channel) not in reached:
                    reached.add(id(channel))
                    channel.accept(event, route)
        if not reached:
            self.unrouted += 1
            log.debug("event reached no notifier", event_id=event.event_id, kind=event.kind.value)

    def _resolved(self, condition: Condition, event: Event) -> None:
        routes = [r for r in resolve(self.routes, condition.opened) if r.settings.send_resolved]
        for route in routes:
            self._reminded.pop((route.id, condition.key), None)
        if routes:
            self._deliver(event, routes)

    # -- reminders ----------------------------------------------------------------------

    def remind(self, now: datetime) -> int:
        """Queue the reminders that are due at ``now``; return how many."""
        sent = 0
        for condition in list(self.conditions.open.values()):
            for route in resolve(self.routes, condition.opened):
                every = route.settings.repeat_interval
                if not every:
                    continue
                key = (route.id, condition.key)
                last, number = self._reminded.get(key, (condition.since, 0))
                if (now - last).total_seconds() < every:
                    continue
                self._reminded[key] = (now, number + 1)
                self._deliver(reminder_event(condition, now, number + 1), [route])
                sent += 1
        return sent

    async def _ticker(self) -> None:
        while True:
            await anyio.sleep(self._tick)
            self.remind(self.clock.wall())

    # -- notifier failures --------------------------------------------------------------

    def _notifier_failed(
        self, channel: NotifierChannel, events: Sequence[Event], detail: str
    ) -> None:
        now = self.clock.wall()
        event = Event(
            event_id=make_event_id(
                "notifier.failed", channel.name, events[0].event_id if events else now
            ),
            kind=EventKind.NOTIFIER_FAILED,
            severity=Severity.FAILURE,
            source=Source.WATCHER,
            watch=WatchRef(WatchType.WATCHER, "notifiers", "run-watcher"),
            subject_id=channel.name,
            from_status="ok",
            to_status="failing",
            observed_at=now,
            details=freeze(
                {
                    "notifier": channel.name,
                    "undeliverable": len(events),
                    "error": detail,
                    "event_ids": [e.event_id for e in events[:20]],
                }
            ),
        )
        # Every other notifier hears of it: routes cannot anticipate a broken channel.
        self._deliver(event, [_BROADCAST], exclude=channel)

    # -- running ------------------------------------------------------------------------

    async def run(
        self,
        events: MemoryObjectReceiveStream[Event],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Route until ``events`` is closed, then let every channel drain.

        When cancelled (the shutdown deadline), what is still pending or in
        flight is kept in :attr:`undelivered` for the shutdown report.
        """
        try:
            async with anyio.create_task_group() as tg:
                for channel in self.channels:
                    tg.start_soon(channel.run)
                ticker = anyio.CancelScope()

                async def tick() -> None:
                    with ticker:
                        await self._ticker()

                tg.start_soon(tick)
                task_status.started()
                try:
                    async with events:
                        async for event in events:
                            self.route(event)
                finally:
                    ticker.cancel()
                    for channel in self.channels:
                        channel.close()
        finally:
            self.undelivered = {c.name: ids for c in self.channels if (ids := c.leftovers())}
