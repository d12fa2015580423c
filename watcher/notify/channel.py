"""One notifier's delivery channel: its groups, its rate limit, its sender, its retries.

The router hands events in without waiting (:meth:`NotifierChannel.accept`). The
channel's own task sends due groups as one message each, when its token bucket
allows; until then later events of a group fold into the same digest. A send that
fails is retried with capped exponential backoff for up to ``retry_for``, so a
notifier that is down for a while catches up when it returns; other notifiers
never wait for it. What still fails is reported as undeliverable, by ``event_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import anyio
import structlog
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from watcher.clock import Clock
from watcher.core import budget
from watcher.core.budget import BudgetPolicy
from watcher.core.events import Event, EventKind
from watcher.core.grouping import Batch, Grouper
from watcher.core.routing import RouteNode, event_field
from watcher.core.statuses import Severity
from watcher.notify.apprise_sender import DeliveryResult, Notifier
from watcher.notify.render import Message
from watcher.notify.serialize import event_to_json
from watcher.notify.templates import MessageRenderer, TemplateSpec

__all__ = ["DeliveryLog", "DeliveryPolicy", "NotifierChannel", "Unlogged", "group_key"]

log = structlog.get_logger("watcher.notify")

_SWEEP_EVERY = 60.0
_RANK = {Severity.INFO: 0, Severity.SUCCESS: 1, Severity.WARNING: 2, Severity.FAILURE: 3}


class DeliveryLog(Protocol):
    """Where a channel reports the end of each message: sent, or given up."""

    async def delivered(self, channel: NotifierChannel, events: Sequence[Event]) -> None:
        """``channel`` sent ``events`` (the outbox forgets them)."""
        ...

    async def undeliverable(
        self, channel: NotifierChannel, events: Sequence[Event], detail: str
    ) -> None:
        """``channel`` gave up on ``events`` after its retries; ``detail`` is the notifier's reason."""
        ...


class Unlogged:
    """The log of a one-off send (``test-notify``, ``routes test``): nothing to keep, and
    the command reports each result itself."""

    async def delivered(self, channel: NotifierChannel, events: Sequence[Event]) -> None:
        """Nothing is kept."""

    async def undeliverable(
        self, channel: NotifierChannel, events: Sequence[Event], detail: str
    ) -> None:
        """Nothing is kept."""


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry and bound settings shared by every channel."""

    max_attempts: int = 20
    retry_for: float = 900.0
    initial_backoff: float = 1.0
    max_backoff: float = 30.0
    queue_size: int = 20_000
    json_max_bytes: int = 1024 * 1024


_SIGHT_KINDS = frozenset({EventKind.WATCH_ERROR, EventKind.WATCH_RECOVERED})


def group_key(route: RouteNode, event: Event) -> Hashable:
    """The group an event joins on a route: the route plus its ``group_by`` values.

    A provider going down makes every watch of it lose sight at once: those
    ``watch.error`` (and later ``watch.recovered``) events group by source instead of
    by watch, so an outage is one message naming the watches, not one per watch.
    """
    values: list[object] = []
    for name in route.settings.group_by:
        if name == "watch":
            sight = event.kind in _SIGHT_KINDS
            values.append(f"source:{event.source.value}" if sight else event.watch.key)
        else:
            values.append(event_field(event, name))
    return (route.id, tuple(values))


class DeliveryFailed(Exception):
    """One send attempt failed."""

    def __init__(self, result: DeliveryResult) -> None:
        super().__init__(result.detail or result.status)
        self.result = result


@dataclass(eq=False)
class NotifierChannel:
    """A notifier with its tags, renderer, grouping, rate limit and counters."""

    notifier: Notifier
    tags: frozenset[str]
    renderer: MessageRenderer
    rate: BudgetPolicy
    policy: DeliveryPolicy
    clock: Clock
    log: DeliveryLog
    scrub: Callable[[str], str] = str
    channel_id: str | None = None
    fingerprint: str | None = None
    sent_messages: int = 0
    sent_events: int = 0
    failed_attempts: int = 0
    failed_messages: int = 0
    undeliverable: int = 0
    dropped: int = 0
    folded: int = 0
    failing: bool = False
    inflight: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.grouper: Grouper[Event, RouteNode] = Grouper(max_items=self.policy.queue_size)
        self._bucket = budget.full(self.rate, self.clock.now())
        self._wakeup = anyio.Event()
        self._closed = False
        self._last_sweep = self.clock.now()

    @property
    def name(self) -> str:
        """The notifier's safe name."""
        return self.notifier.name

    @property
    def id(self) -> str:
        """A stable id for the state file's outbox (the name, unless one is given)."""
        return self.channel_id or self.name

    @property
    def format(self) -> str:
        """``text`` or ``json``."""
        return self.renderer.fmt

    def queued(self) -> int:
        """Events waiting to be sent."""
        return len(self.grouper)

    def accept(self, event: Event, route: RouteNode) -> bool:
        """Take an event for this notifier (never waits). False when the backlog is full."""
        s = route.settings
        if not self.grouper.add(
            group_key(route, event),
            event,
            route,
            wait=s.group_wait,
            interval=s.group_interval,
            now=self.clock.now(),
            rank=_RANK[event.severity],
        ):
            self.dropped += 1
            log.error(
                "notifier backlog full: event undeliverable",
                notifier=self.name,
                event_id=event.event_id,
                kind=event.kind.value,
                subject_id=event.subject_id,
                queue_size=self.policy.queue_size,
            )
            return False
        self._wakeup.set()
        return True

    def close(self) -> None:
        """No more events: send what is pending now, ignoring group timing and rate limit."""
        self._closed = True
        self._wakeup.set()

    async def run(self) -> None:
        """Send due groups until closed and drained."""
        while True:
            batches = self._next_batches()
            if batches:
                await self._send(batches)
                continue
            if self._closed and not len(self.grouper):
                return
            await self._sleep()

    def _next_batches(self) -> list[Batch[Event, RouteNode]]:
        """The next message's batches: one group, or, on the last token, every due group."""
        now = self.clock.now()
        if now - self._last_sweep >= _SWEEP_EVERY:
            self.grouper.sweep(now)
            self._last_sweep = now
        if self._closed:
            # Shutdown: everything pending goes now, folded into one digest.
            return self.grouper.drain()
        due = self.grouper.next_due()
        if due is None or due > now:
            return []
        self._bucket, ok = budget.take(self._bucket, self.rate, now)
        if not ok:
            return []
        batches = []
        while (batch := self.grouper.pop_due(now)) is not None:
            batches.append(batch)
            if budget.wait_time(self._bucket, self.rate, now) == 0:
                break  # tokens left: the other due groups get messages of their own
        if len(batches) > 1:
            self.folded += len(batches) - 1
        return batches

    async def _sleep(self) -> None:
        now = self.clock.now()
        due = self.grouper.next_due()
        timeout = 3600.0
        if due is not None:
            timeout = max(due - now, budget.wait_time(self._bucket, self.rate, now), 0.0)
        self._wakeup = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._wakeup.wait()

    def messages(
        self, events: Sequence[Event], route: RouteNode | None
    ) -> list[tuple[Message, list[Event]]]:
        """The messages of one batch: one digest, split by size for JSON receivers.

        ``route`` is None for a digest folded from several groups (rate limit):
        it is rendered with the notifier's own templates.
        """
        if self.format != "json":
            spec = None
            if route is not None:
                s = route.settings
                spec = TemplateSpec(s.title_template, s.body_template, s.body_format)
            return [(self._scrubbed(self.renderer.render(events, spec)), list(events))]
        chunks: list[list[Event]] = [[]]
        size = 0
        for event in events:
            length = len(event_to_json(event)) + 1
            if chunks[-1] and size + length > self.policy.json_max_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(event)
            size += length
        out = []
        for chunk in chunks:
            out.append((self._scrubbed(self.renderer.render(chunk)), chunk))
        return out

    def _scrubbed(self, message: Message) -> Message:
        """``message`` with every registered secret masked, title and body."""
        return replace(message, title=self.scrub(message.title), body=self.scrub(message.body))

    async def _send(self, batches: list[Batch[Event, RouteNode]]) -> None:
        if len(batches) == 1:
            events: Sequence[Event] = batches[0].items
            route: RouteNode | None = batches[0].context
        else:
            events = [e for b in batches for e in b.items]
            route = None
        for message, chunk in self.messages(events, route):
            await self.deliver(message, chunk)

    async def deliver(self, message: Message, events: list[Event]) -> bool:
        """Send one message, retrying for up to ``retry_for`` / ``max_attempts``."""
        self.inflight = events
        policy = self.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.retry_for),
            wait=wait_random_exponential(multiplier=policy.initial_backoff, max=policy.max_backoff),
            retry=retry_if_exception_type(DeliveryFailed),
            sleep=anyio.sleep,
        )
        ids = [e.event_id for e in events]
        try:
            async for attempt in retrying:
                with attempt:
                    result = await self.notifier.send(message)
                    if not result.ok:
                        self.failed_attempts += 1
                        log.warning(
                            "notification attempt failed",
                            notifier=self.name,
                            attempt=attempt.retry_state.attempt_number,
                            status=result.status,
                            detail=result.detail,
                            events=len(ids),
                            event_ids=ids[:20],
                        )
                        raise DeliveryFailed(result)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            detail = str(last) if last else "failed"
            self.failed_messages += 1
            self.undeliverable += len(events)
            log.error(
                "notification undeliverable after retries",
                notifier=self.name,
                attempts=exc.last_attempt.attempt_number,
                detail=detail,
                events=len(ids),
                event_ids=ids,
            )
            was_failing, self.failing = self.failing, True
            if not was_failing:
                await self.log.undeliverable(self, events, detail)
            return False
        finally:
            self.inflight = []
        self.failing = False
        self.sent_messages += 1
        self.sent_events += len(events)
        await self.log.delivered(self, events)
        log.info(
            "notification sent",
            notifier=self.name,
            title=message.title,
            events=len(ids),
            event_ids=ids[:20],
        )
        return True

    def leftovers(self) -> list[str]:
        """Event ids still pending or in flight (for the shutdown report)."""
        ids = [e.event_id for e in self.inflight]
        for batch in self.grouper.drain():
            ids.extend(e.event_id for e in batch.items)
        return ids
