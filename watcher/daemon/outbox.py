"""The one publish path: plan, commit to the state file, then hand over to the channels.

Polls, streams, reminders, broadcasts about the watcher itself, heartbeats and the
HTTP API all publish through :class:`Outbox`; the dispatcher plans and its
channels send, but neither writes to the state file or decides when a plan is
safe to hand over. A notification the state file accepted survives a crash; one
it refused is still sent, and the watcher says the file is unavailable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog

from watcher.clock import Clock
from watcher.core.events import Event, EventKind
from watcher.core.flapping import FlapPolicy
from watcher.core.routing import RouteNode
from watcher.core.silences import Silence
from watcher.core.statuses import Severity
from watcher.daemon.durability import Durability
from watcher.daemon.state import OutboxRow, Stored, WatchWrite
from watcher.notify.channel import NotifierChannel
from watcher.notify.dispatcher import DEFAULT_ROUTE, Dispatcher, Plan, watcher_event
from watcher.notify.serialize import condition_from_dict, event_from_dict, event_to_dict

__all__ = ["Outbox"]

log = structlog.get_logger("watcher.outbox")


class SharedStates(Protocol):
    """Where watch states go instead of the state file (a cluster's Redis)."""

    async def write(
        self, writes: Sequence[WatchWrite], owed: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Write (or with ``state=None`` delete) watch states, with the events their change
        owes notifiers (a successor sends them again if this replica dies first)."""
        ...

    async def write_conditions(self, items: Sequence[tuple[str, dict[str, Any] | None]]) -> None:
        """Keep (or with ``None`` forget) open conditions, by key."""
        ...


class Outbox:
    """Publishes events: the dispatcher's plan is committed, then handed to the channels.

    It is also every channel's delivery log: what a channel sent leaves the state
    file, and what it could not send becomes a ``notifier.failed`` to the others.
    """

    def __init__(
        self,
        durability: Durability,
        clock: Clock,
        *,
        routes: Sequence[RouteNode],
        silences: Sequence[Silence] = (),
        state_file: Path | None = None,
        on_published: Callable[[Sequence[Event]], None] | None = None,
        flaps: FlapPolicy | None = None,
    ) -> None:
        self.durability = durability
        self.clock = clock
        self.state_file = state_file
        self.on_published = on_published
        self.dispatcher = Dispatcher(
            routes, clock, sink=self.commit, silences=silences, flaps=flaps
        )
        self.shared: SharedStates | None = None
        """With ``cluster:``, watch states live there; the state file keeps the outbox."""

    # -- publishing -------------------------------------------------------------------------

    async def publish(self, events: Sequence[Event], writes: Sequence[WatchWrite] = ()) -> None:
        """Plan ``events``; persist ``writes`` with the plan's outbox rows; then deliver."""
        if self.on_published is not None and events:
            self.on_published(events)
        await self.commit(self.dispatcher.plan(events), writes)

    async def commit(self, plan: Plan, writes: Sequence[WatchWrite] = ()) -> None:
        """Persist a plan (and watch states), then hand its deliveries to the channels."""
        rows = [
            OutboxRow(d.event.event_id, d.channel.id, d.route.id, event_to_dict(d.event))
            for d in plan.deliveries
        ]
        healthy = self.durability.healthy
        owed = list({d.event.event_id: d.event for d in plan.deliveries}.values())
        writes = await self._share(writes, owed)
        conditions = list(plan.conditions.items())
        if self.shared is not None and conditions:
            await self.shared.write_conditions(conditions)
            conditions = []
        await self.durability.commit(writes, rows, conditions)
        self.dispatcher.apply(plan)
        if self.durability.healthy != healthy:
            await self.announce_durability()

    async def forget(self, writes: Sequence[WatchWrite]) -> None:
        """Watches that are gone: drop their states and the conditions they held open."""
        for write in writes:
            self.dispatcher.conditions.forget_watch(write.key)
        await self.keep(writes)

    async def keep(self, writes: Sequence[WatchWrite]) -> None:
        """Persist watch states alone (retirements, restores)."""
        if writes := await self._share(writes):
            await self.durability.commit(writes, [])

    async def _share(
        self, writes: Sequence[WatchWrite], owed: Sequence[Event] = ()
    ) -> Sequence[WatchWrite]:
        """Hand the states to the cluster when there is one; what the state file keeps."""
        if self.shared is None or not writes:
            return writes
        await self.shared.write(writes, [event_to_dict(e) for e in owed])
        return ()

    async def republish(self, owed: Sequence[dict[str, Any]]) -> None:
        """Send again what a dead replica owed for the watches taken over; the notification
        log drops each copy it had sent already."""
        events = []
        for data in owed:
            try:
                events.append(event_from_dict(data))
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("owed event not readable; dropped", error=str(exc))
        if events:
            await self.commit(self.dispatcher.plan(events))

    async def announce_cluster(self, degraded: bool, where: str, error: str | None) -> None:
        """The cluster lost (or regained) Redis: one event, from the replica that speaks."""
        now = self.clock.wall()
        kind = EventKind.CLUSTER_DEGRADED if degraded else EventKind.CLUSTER_RECOVERED
        details: dict[str, object] = (
            {
                "from": "ok",
                "to": "degraded",
                "error": error or "",
                "message": "every replica keeps watching (duplicates possible, nothing lost)",
            }
            if degraded
            else {"from": "degraded", "to": "ok", "message": "one owner per watch again"}
        )
        severity = Severity.WARNING if degraded else Severity.INFO
        await self.dispatcher.broadcast(
            watcher_event(kind, severity, where, now, details, now.isoformat())
        )

    # -- the delivery log (every channel's) -------------------------------------------------

    async def delivered(self, channel: NotifierChannel, events: Sequence[Event]) -> None:
        """``channel`` sent ``events``: they leave the state file's outbox."""
        healthy = self.durability.healthy
        await self.durability.delivered(channel.id, [e.event_id for e in events])
        if self.durability.healthy != healthy:
            await self.announce_durability()

    async def undeliverable(
        self, channel: NotifierChannel, events: Sequence[Event], detail: str
    ) -> None:
        """``channel`` gave up on ``events``: tell the other notifiers, with its reason."""
        await self.dispatcher.notifier_failed(channel, events, detail)

    # -- the watcher's own events -----------------------------------------------------------

    async def announce_durability(self) -> None:
        """The state file stopped (or resumed) taking writes: say so to every notifier."""
        path = str(self.state_file)
        now = self.clock.wall()
        if self.durability.healthy:
            event = watcher_event(
                EventKind.STATE_RECOVERED,
                Severity.INFO,
                path,
                now,
                {"from": "unavailable", "to": "ok"},
                now.isoformat(),
            )
        else:
            event = watcher_event(
                EventKind.STATE_UNAVAILABLE,
                Severity.WARNING,
                path,
                now,
                {
                    "from": "ok",
                    "to": "unavailable",
                    "error": self.durability.error or "",
                    "message": "notifications are no longer kept across a restart",
                },
                now.isoformat(),
            )
        await self.dispatcher.broadcast(event)

    async def announce_fresh_start(self, moved_to: Path) -> None:
        """The state file was damaged and moved aside: what it held is lost; say so."""
        now = self.clock.wall()
        event = watcher_event(
            EventKind.STATE_UNAVAILABLE,
            Severity.WARNING,
            str(self.state_file),
            now,
            {
                "from": "damaged",
                "to": "fresh",
                "error": f"the state file was damaged; moved aside to {moved_to}",
                "moved_to": str(moved_to),
                "message": "started with an empty state: notifications pending before the "
                "restart, and the baseline of each watch, are lost",
            },
            now.isoformat(),
        )
        await self.dispatcher.broadcast(event)

    # -- restart ----------------------------------------------------------------------------

    def take_conditions(self, stored: Mapping[str, dict[str, Any]]) -> None:
        """Open conditions read back (the state file, or a cluster's at a takeover)."""
        conditions = []
        for key, data in stored.items():
            try:
                conditions.append(condition_from_dict(data))
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("stored condition not usable; dropped", condition=key, error=str(exc))
        self.dispatcher.restore_conditions(conditions)

    async def restore(self, stored: Stored) -> None:
        """Take back the open conditions and the undelivered notifications of the last run."""
        self.take_conditions(stored.conditions)
        owed: dict[str, int] = {}
        gone: set[str] = set()
        for row in stored.outbox:
            channel = self.dispatcher.channel_by_id(row.notifier)
            if channel is None:
                gone.add(row.notifier)
                continue
            try:
                event = event_from_dict(row.event)
            except (KeyError, ValueError, TypeError) as exc:
                log.error(
                    "stored notification not readable; dropped",
                    event_id=row.event_id,
                    error=str(exc),
                )
                continue
            channel.accept(event, self.dispatcher.route_by_id(row.route) or DEFAULT_ROUTE)
            owed[channel.name] = owed.get(channel.name, 0) + 1
        if owed:
            log.info("undelivered notifications restored from the outbox", notifiers=owed)
        for notifier in gone:
            dropped = await self.durability.forget_notifier(notifier)
            log.warning(
                "outbox entries for a notifier no longer configured dropped",
                notifier=notifier,
                events=dropped,
            )
