"""Grouping: many events, few messages. A sans-I/O state machine; ``now`` is given.

Alertmanager's timing, per group key:

- the first event of a new group waits ``group_wait`` for company;
- after a group was flushed, new events wait until ``group_interval`` has passed
  since that flush, then go out together;
- a group left empty for a ``group_interval`` is forgotten, so the next event
  starts a new group;
- an escalation does not wait for the interval: an item ranked above everything
  the group has sent so far (a failure after a warning) goes out after
  ``group_wait``.

The caller decides when to pop a due batch (for instance only when its rate
limit allows); until then, later events of the same group fold into it. A group
can be *held* (its last batch is still being delivered): it is never due while
held, so its batches leave in order, and what arrives meanwhile folds into the
next one.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Batch", "Grouper"]

T = TypeVar("T")
C = TypeVar("C")


@dataclass
class _Group(Generic[T, C]):
    key: Hashable
    context: C
    wait: float
    interval: float
    items: list[T] = field(default_factory=list)
    due: float = 0.0
    last_flush: float | None = None
    sent_rank: int = -1
    pending_rank: int = -1


@dataclass(frozen=True, slots=True)
class Batch(Generic[T, C]):
    """Items of one group, popped together, with the group's context (route settings)."""

    key: Hashable
    items: tuple[T, ...]
    context: C


class Grouper(Generic[T, C]):
    """Pending items by group key, and when each group is due."""

    def __init__(self, max_items: int | None = None) -> None:
        self.max_items = max_items
        self._groups: dict[Hashable, _Group[T, C]] = {}
        self._due: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._pending = 0
        self._held: dict[Hashable, int] = {}

    def __len__(self) -> int:
        """Items pending in all groups."""
        return self._pending

    def add(
        self,
        key: Hashable,
        item: T,
        context: C,
        *,
        wait: float,
        interval: float,
        now: float,
        rank: int = 0,
    ) -> bool:
        """Add ``item`` to group ``key``. False (item not taken) when over ``max_items``.

        ``rank`` orders urgency (severity): an item ranked above everything the
        group has sent is due after ``wait``, whatever the interval says.
        """
        if self.max_items is not None and self._pending >= self.max_items:
            return False
        group = self._groups.get(key)
        if (
            group is not None
            and not group.items
            and group.last_flush is not None
            and now - group.last_flush >= group.interval
        ):
            group = None  # quiet for a whole interval: start afresh
        if group is None:
            group = _Group(key, context, wait, interval, due=now + wait)
            self._groups[key] = group
            self._schedule(group)
        else:
            due = group.due
            if not group.items:
                assert group.last_flush is not None
                due = max(now, group.last_flush + group.interval)
                group.context = context
            if rank > group.sent_rank:
                due = min(due, now + wait)
            if not group.items or due != group.due:
                group.due = due
                self._schedule(group)
        group.items.append(item)
        group.pending_rank = max(group.pending_rank, rank)
        self._pending += 1
        return True

    def _schedule(self, group: _Group[T, C]) -> None:
        heapq.heappush(self._due, (group.due, next(self._seq), group.key))

    def hold(self, key: Hashable) -> None:
        """Keep group ``key`` from being due until as many :meth:`release` calls."""
        self._held[key] = self._held.get(key, 0) + 1

    def release(self, key: Hashable) -> None:
        """Undo one :meth:`hold`; the group's pending items are due as scheduled."""
        count = self._held.get(key, 0) - 1
        if count > 0:
            self._held[key] = count
            return
        self._held.pop(key, None)
        group = self._groups.get(key)
        if group is not None and group.items:
            self._schedule(group)

    def next_due(self) -> float | None:
        """When the earliest pending group that is not held is due, if any."""
        while self._due:
            due, _, key = self._due[0]
            group = self._groups.get(key)
            if group is not None and group.items and group.due == due and key not in self._held:
                return due
            # Stale, or held: release() schedules a held group again.
            heapq.heappop(self._due)
        return None

    def pop_due(self, now: float) -> Batch[T, C] | None:
        """Take the earliest group that is due at ``now``, if any."""
        due = self.next_due()
        if due is None or due > now:
            return None
        _, _, key = heapq.heappop(self._due)
        group = self._groups[key]
        items = tuple(group.items)
        group.items.clear()
        group.last_flush = now
        group.sent_rank = max(group.sent_rank, group.pending_rank)
        group.pending_rank = -1
        self._pending -= len(items)
        return Batch(key, items, group.context)

    def drain(self) -> list[Batch[T, C]]:
        """Take every pending group that is not held at once (shutdown), earliest first."""
        batches = []
        while (due := self.next_due()) is not None:
            batch = self.pop_due(due)
            assert batch is not None
            batches.append(batch)
        return batches

    def pending(self) -> list[T]:
        """Every pending item, held groups included (for a report; nothing is taken)."""
        return [item for group in self._groups.values() for item in group.items]

    def sweep(self, now: float) -> None:
        """Forget groups that have been empty for a whole interval (bounded memory)."""
        stale = [
            key
            for key, g in self._groups.items()
            if not g.items
            and g.last_flush is not None
            and now - g.last_flush >= g.interval
            and key not in self._held
        ]
        for key in stale:
            del self._groups[key]

    @property
    def groups(self) -> int:
        """Groups known (pending or recently flushed)."""
        return len(self._groups)
