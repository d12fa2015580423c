"""One notifier's delivery channel: its groups, its rate limit, its sender, its retries.

The router hands events in without waiting (:meth:`NotifierChannel.accept`). The
channel's own task sends due groups as one message each, when its token bucket
allows; until then later events of a group fold into the same digest. Up to
``concurrency`` sends are in flight at once, and a send that fails is retried on
its own schedule (capped exponential backoff, :mod:`watcher.core.redelivery`) for
up to ``retry_for``: one message that keeps failing or hangs never holds back the
others. Order holds per watch: a message waits until every earlier message that
carries an event of one of its watches is sent or given up; and while a group's
message is owed the group is held, so its later events fold into the message
after it. A notifier that is down for a while catches up
when it returns; other notifiers never wait for it. What still fails is reported
as undeliverable, by ``event_id``; at shutdown, what is owed or pending is listed
by :meth:`NotifierChannel.leftovers`.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskGroup

from watcher.clock import Clock
from watcher.core import budget
from watcher.core.budget import BudgetPolicy
from watcher.core.events import Event, EventKind
from watcher.core.grouping import Batch, Grouper
from watcher.core.redelivery import RetryPolicy, next_attempt
from watcher.core.routing import RouteNode, event_field
from watcher.core.statuses import Severity
from watcher.notify.apprise_sender import DeliveryResult, Notifier
from watcher.notify.render import Message
from watcher.notify.serialize import event_to_json
from watcher.notify.templates import MessageRenderer, TemplateSpec

__all__ = [
    "DeliveryLog",
    "DeliveryPolicy",
    "NotifierChannel",
    "SendLog",
    "Unlogged",
    "group_key",
]

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


class SendLog(Protocol):
    """A notification log shared by replicas (a cluster's): one copy of each send."""

    async def claim(self, notifier: str, event_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """Claim the sends of ``event_ids``: the ids another replica sent, and those another
        is sending now (both empty when the log cannot be reached: twice beats never)."""
        ...

    async def sent(self, notifier: str, event_ids: Sequence[str]) -> None:
        """Record that ``event_ids`` went out."""
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
    concurrency: int = 4

    @property
    def retry(self) -> RetryPolicy:
        """The per-message retry caps and backoff."""
        return RetryPolicy(
            self.max_attempts, self.retry_for, self.initial_backoff, self.max_backoff
        )


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


@dataclass(eq=False)
class _Owed:
    """One rendered message the notifier still owes: in flight, or waiting to retry."""

    seq: int
    message: Message
    events: list[Event]
    groups: tuple[Hashable, ...]
    lanes: frozenset[str]
    first_at: float
    attempts: int = 0
    due: float = float("inf")  # not queued: waits behind an earlier message of a watch
    sending: bool = False


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
    rng: random.Random = field(default_factory=random.Random)
    sent_messages: int = 0
    sent_events: int = 0
    failed_attempts: int = 0
    failed_messages: int = 0
    undeliverable: int = 0
    dropped: int = 0
    folded: int = 0
    failing: bool = False
    sends: SendLog | None = None
    """The cluster's notification log; None for a single process."""
    peer_sent: int = 0
    """Events another replica had sent already (their copy here was dropped)."""

    def __post_init__(self) -> None:
        self.grouper: Grouper[Event, RouteNode] = Grouper(max_items=self.policy.queue_size)
        self._bucket = budget.full(self.rate, self.clock.now())
        self._wakeup = anyio.Event()
        self._closed = False
        self._last_sweep = self.clock.now()
        self._retry_policy = self.policy.retry
        self._owed: dict[int, _Owed] = {}
        self._owed_events = 0
        self._retries: list[tuple[float, int]] = []  # (due, seq) of owed messages not sending
        self._sending = 0
        self._seq = itertools.count()
        # One FIFO per watch of the owed messages that carry its events: a message goes
        # out (and retries) only at the head of each, so a watch's messages keep order.
        self._lanes: dict[str, deque[int]] = {}

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
        """Events not delivered yet: pending in groups, in flight, or waiting to retry."""
        return len(self.grouper) + self._owed_events

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
        """Send due messages until closed and drained; each send is a task of its own."""
        async with anyio.create_task_group() as sends:
            while True:
                self._start_due(sends)
                if self._closed and not len(self.grouper) and not self._owed:
                    return
                await self._sleep()

    # -- choosing what to send ---------------------------------------------------------

    def _start_due(self, sends: TaskGroup) -> None:
        """Start every send that is due, within the concurrency cap and the rate limit."""
        now = self.clock.now()
        if now - self._last_sweep >= _SWEEP_EVERY:
            self.grouper.sweep(now)
            self._last_sweep = now
        while self._sending < self.policy.concurrency:
            owed = self._next_owed(now)
            if owed is None:
                batches = self._next_batches(now)
                if not batches:
                    return
                self._owe(batches, now)
                continue
            if owed.attempts and not self._closed:
                # A retry is a request like any other: it waits for a token.
                self._bucket, ok = budget.take(self._bucket, self.rate, now)
                if not ok:
                    return
            heapq.heappop(self._retries)
            owed.sending = True
            self._sending += 1
            sends.start_soon(self._attempt, owed)

    def _next_owed(self, now: float) -> _Owed | None:
        """The owed message due first, if it is due at ``now``."""
        while self._retries:
            due, seq = self._retries[0]
            owed = self._owed.get(seq)
            if owed is not None and not owed.sending and owed.due == due:
                return owed if due <= now else None
            heapq.heappop(self._retries)
        return None

    def _next_batches(self, now: float) -> list[Batch[Event, RouteNode]]:
        """The next message's batches: one group, or, on the last token, every due group."""
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

    def _owe(self, batches: list[Batch[Event, RouteNode]], now: float) -> None:
        """Render ``batches`` into owed messages, due now; hold their groups until done."""
        if len(batches) == 1:
            events: Sequence[Event] = batches[0].items
            route: RouteNode | None = batches[0].context
        else:
            events = [e for b in batches for e in b.items]
            route = None
        groups = tuple(b.key for b in batches)
        for message, chunk in self.messages(events, route):
            lanes = frozenset(e.watch.key for e in chunk)
            owed = _Owed(next(self._seq), message, chunk, groups, lanes, first_at=now)
            for group in groups:
                self.grouper.hold(group)
            for lane in lanes:
                self._lanes.setdefault(lane, deque()).append(owed.seq)
            self._owed[owed.seq] = owed
            self._owed_events += len(chunk)
            self._queue_if_first(owed, now)

    def _queue_if_first(self, owed: _Owed, now: float) -> None:
        """Make ``owed`` due now if it heads the queue of each of its watches."""
        if all(self._lanes[lane][0] == owed.seq for lane in owed.lanes):
            owed.due = now
            heapq.heappush(self._retries, (now, owed.seq))

    async def _sleep(self) -> None:
        now = self.clock.now()
        timeout = 3600.0
        if self._sending < self.policy.concurrency:
            wait = budget.wait_time(self._bucket, self.rate, now)
            due = self.grouper.next_due()
            if due is not None:
                timeout = max(due - now, wait, 0.0)
            if self._next_owed(float("inf")) is not None:
                retry_at = self._retries[0][0]
                timeout = min(timeout, max(retry_at - now, wait, 0.0))
        self._wakeup = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._wakeup.wait()

    # -- rendering -----------------------------------------------------------------------

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
            message = replace(self.renderer.render(events, spec), events=tuple(events))
            return [(self._scrubbed(message), list(events))]
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

    # -- sending -------------------------------------------------------------------------

    async def _attempt(self, owed: _Owed) -> None:
        """One attempt at ``owed``; then it is delivered, given up, or due again later.

        Cancelled (the shutdown deadline), it stays owed, so :meth:`leftovers` lists it.
        """
        owed.attempts += 1
        ids = [e.event_id for e in owed.events]
        by_peer = False
        try:
            sent, busy = await self.sends.claim(self.id, ids) if self.sends else (set(), set())
            if set(ids) <= sent:
                by_peer = True
                result = DeliveryResult(True, "PEER", "another replica sent it")
            elif busy:
                # Its claim ends with its send, or expires if it died: try again later.
                result = DeliveryResult(False, "PEER", "another replica is sending it")
            else:
                result = await self.notifier.send(owed.message)
        except Exception as exc:  # a notifier's bug must not end the channel
            detail = self.scrub(f"{type(exc).__name__}: {exc}")[:500]
            result = DeliveryResult(False, "ERROR", detail)
        finally:
            owed.sending = False
            self._sending -= 1
            self._wakeup.set()
        if by_peer:
            self._settle(owed)
            self.peer_sent += len(ids)
            log.info(
                "notification already sent by another replica; this copy dropped",
                notifier=self.name,
                events=len(ids),
                event_ids=ids[:20],
            )
            await self.log.delivered(self, owed.events)
            return
        if result.ok:
            self._settle(owed)
            self.failing = False
            self.sent_messages += 1
            self.sent_events += len(owed.events)
            log.info(
                "notification sent",
                notifier=self.name,
                title=owed.message.title,
                attempts=owed.attempts,
                events=len(ids),
                event_ids=ids[:20],
            )
            if self.sends is not None:
                await self.sends.sent(self.id, ids)
            await self.log.delivered(self, owed.events)
            return
        self.failed_attempts += 1
        now = self.clock.now()
        policy, after = self._retry_policy, result.retry_after
        retry_at = None if result.permanent else next_attempt(policy, owed.attempts, owed.first_at, now, self.rng, after)  # fmt: skip
        detail = result.detail or result.status
        if retry_at is not None:
            log.warning(
                "notification attempt failed",
                notifier=self.name,
                attempt=owed.attempts,
                status=result.status,
                detail=detail,
                retry_in=round(retry_at - now, 3),
                events=len(ids),
                event_ids=ids[:20],
            )
            owed.due = retry_at
            heapq.heappush(self._retries, (retry_at, owed.seq))
            return
        self._settle(owed)
        self.failed_messages += 1
        self.undeliverable += len(owed.events)
        log.error(
            "notification undeliverable after retries",
            notifier=self.name,
            attempts=owed.attempts,
            status=result.status,
            detail=detail,
            events=len(ids),
            event_ids=ids,
        )
        was_failing, self.failing = self.failing, True
        if not was_failing:
            await self.log.undeliverable(self, owed.events, detail)

    def _settle(self, owed: _Owed) -> None:
        """``owed`` is done (sent or given up): its groups may send their next message."""
        del self._owed[owed.seq]
        self._owed_events -= len(owed.events)
        for group in owed.groups:
            self.grouper.release(group)
        now = self.clock.now()
        for lane in owed.lanes:
            queue = self._lanes[lane]
            queue.popleft()  # a message is only ever sent at the head of its queues
            if not queue:
                del self._lanes[lane]
            elif (following := self._owed[queue[0]]).due == float("inf"):
                self._queue_if_first(following, now)

    def leftovers(self) -> list[str]:
        """Event ids not delivered: in flight, waiting to retry, or pending (shutdown report)."""
        ids = [e.event_id for owed in self._owed.values() for e in owed.events]
        ids.extend(e.event_id for e in self.grouper.pending())
        return ids
