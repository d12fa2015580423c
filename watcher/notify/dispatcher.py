"""Route events to notifiers and deliver them, each notifier on its own queue.

A router task takes events from the pollers and puts each on the bounded queue
of every notifier its route names; it never waits, so a slow or dead notifier
never delays polling. Each notifier has a worker that renders and sends, with
capped exponential retries (tenacity). What cannot be delivered is logged with
its ``event_id`` and counted, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import anyio
import structlog
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from watcher.core.events import Event
from watcher.core.routing import Route, route_tags
from watcher.notify.apprise_sender import DeliveryResult, Notifier
from watcher.notify.render import Message, render_json, render_text

__all__ = ["DeliveryPolicy", "Dispatcher", "NotifierSlot", "group_for_delivery"]

log = structlog.get_logger("watcher.notify")


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry and queue settings shared by every notifier."""

    max_attempts: int = 5
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    queue_size: int = 10_000
    batch_max: int = 50


@dataclass(eq=False)
class NotifierSlot:
    """A notifier with its tags, format, queue and counters."""

    notifier: Notifier
    tags: frozenset[str]
    format: Literal["text", "json"] = "text"
    queue_size: int = 10_000
    sent: int = 0
    failed_attempts: int = 0
    undeliverable: int = 0
    dropped: int = 0
    inflight: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.send_stream: MemoryObjectSendStream[Event]
        self.receive_stream: MemoryObjectReceiveStream[Event]
        self.send_stream, self.receive_stream = anyio.create_memory_object_stream[Event](
            max_buffer_size=self.queue_size
        )

    @property
    def name(self) -> str:
        """The notifier's safe name."""
        return self.notifier.name

    def queued(self) -> int:
        """Events waiting in this notifier's queue."""
        return self.receive_stream.statistics().current_buffer_used


class DeliveryFailed(Exception):
    """One send attempt failed."""

    def __init__(self, result: DeliveryResult) -> None:
        super().__init__(result.detail or result.status)
        self.result = result


def group_for_delivery(events: Sequence[Event], fmt: str) -> list[tuple[Message, list[Event]]]:
    """Messages for a batch of events taken from one queue.

    Text notifiers get one message per (watch, kind) in the batch, so a burst of
    failures in one group reads as one digest; JSON notifiers get every event
    as its own message.
    """
    if fmt == "json":
        return [(render_json(e), [e]) for e in events]
    groups: dict[tuple[str, str], list[Event]] = {}
    for event in events:
        groups.setdefault((event.watch.key, event.kind.value), []).append(event)
    return [(render_text(group), group) for group in groups.values()]


class Dispatcher:
    """The router plus one delivery worker per notifier."""

    def __init__(
        self,
        routes: Sequence[Route] | None,
        slots: Sequence[NotifierSlot],
        policy: DeliveryPolicy,
        *,
        on_delivered: Callable[[NotifierSlot, Sequence[Event]], None] | None = None,
        scrub: Callable[[str], str] = str,
    ) -> None:
        self.routes = routes
        self.slots = list(slots)
        self.policy = policy
        self.unrouted = 0
        self.undelivered: dict[str, list[str]] = {}
        self._on_delivered = on_delivered
        # Upstream error text lands in messages; never let it carry a known secret out.
        self._scrub = scrub

    def targets(self, event: Event) -> list[NotifierSlot]:
        """The notifiers ``event`` goes to. No routes configured: every notifier."""
        if self.routes is None:
            return list(self.slots)
        tags = set(route_tags(self.routes, event))
        return [slot for slot in self.slots if slot.tags & tags]

    async def run(
        self,
        events: MemoryObjectReceiveStream[Event],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Route until ``events`` is closed, then let every queue drain.

        When cancelled (the shutdown deadline), what is still queued or in
        flight is kept in :attr:`undelivered` for the shutdown report.
        """
        try:
            async with anyio.create_task_group() as tg:
                for slot in self.slots:
                    tg.start_soon(self._worker, slot)
                task_status.started()
                try:
                    async with events:
                        async for event in events:
                            self.route(event)
                finally:
                    for slot in self.slots:
                        slot.send_stream.close()
        finally:
            self.undelivered = self._collect_leftovers()

    def route(self, event: Event) -> None:
        """Queue ``event`` for its notifiers without waiting."""
        targets = self.targets(event)
        if not targets:
            self.unrouted += 1
            log.debug("event matched no route", event_id=event.event_id, kind=event.kind.value)
            return
        for slot in targets:
            try:
                slot.send_stream.send_nowait(event)
            except anyio.WouldBlock:
                slot.dropped += 1
                log.error(
                    "notifier queue full: event undeliverable",
                    notifier=slot.name,
                    event_id=event.event_id,
                    kind=event.kind.value,
                    subject_id=event.subject_id,
                    queue_size=slot.queue_size,
                )

    async def _worker(self, slot: NotifierSlot) -> None:
        receive = slot.receive_stream
        while True:
            try:
                first = await receive.receive()
            except anyio.EndOfStream:
                return
            batch = [first]
            while len(batch) < self.policy.batch_max:
                try:
                    batch.append(receive.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            for message, events in group_for_delivery(batch, slot.format):
                safe = replace(
                    message, title=self._scrub(message.title), body=self._scrub(message.body)
                )
                await self.deliver(slot, safe, events)

    async def deliver(self, slot: NotifierSlot, message: Message, events: list[Event]) -> bool:
        """Send one message with capped, jittered exponential retries."""
        slot.inflight = events
        policy = self.policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=wait_random_exponential(multiplier=policy.initial_backoff, max=policy.max_backoff),
            retry=retry_if_exception_type(DeliveryFailed),
            sleep=anyio.sleep,
        )
        ids = [e.event_id for e in events]
        try:
            async for attempt in retrying:
                with attempt:
                    result = await slot.notifier.send(message)
                    if not result.ok:
                        slot.failed_attempts += 1
                        log.warning(
                            "notification attempt failed",
                            notifier=slot.name,
                            attempt=attempt.retry_state.attempt_number,
                            max_attempts=policy.max_attempts,
                            status=result.status,
                            detail=result.detail,
                            event_ids=ids,
                        )
                        raise DeliveryFailed(result)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            slot.undeliverable += len(events)
            log.error(
                "notification undeliverable after retries",
                notifier=slot.name,
                attempts=policy.max_attempts,
                detail=str(last) if last else "",
                event_ids=ids,
                kinds=sorted({e.kind.value for e in events}),
            )
            return False
        finally:
            slot.inflight = []
        slot.sent += len(events)
        log.info(
            "notification sent",
            notifier=slot.name,
            title=message.title,
            event_ids=ids,
        )
        if self._on_delivered is not None:
            self._on_delivered(slot, events)
        return True

    def _collect_leftovers(self) -> dict[str, list[str]]:
        """Event ids still queued or in flight per notifier; closes the queues."""
        out: dict[str, list[str]] = {}
        for slot in self.slots:
            ids = [e.event_id for e in slot.inflight]
            while True:
                try:
                    ids.append(slot.receive_stream.receive_nowait().event_id)
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            slot.receive_stream.close()
            if ids:
                out[slot.name] = ids
        return out
