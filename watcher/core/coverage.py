"""One upstream change, one event: watches that cover the same subject share it.

A run can be covered by several watches (a ``trigger_run`` and a ``trigger_runs``
filter; a ``parallel_task_run`` inside a watched group). Each watch that sees the
change makes its event, with the same ``event_id`` (see
:func:`watcher.core.diff.change_id`); the first is published, carrying every
watch that covers the subject, and the later copies are dropped. Pure: the daemon
keeps the record of announced changes and the index of who covers what.

**Merged labels**: the union of the covering watches' labels; where two disagree on a
label, the watch that names the subject most precisely wins (a single-run watch over
a ``trigger_runs`` filter over a group), then the one whose key sorts first. The
event's ``watch`` is that most precise watch, with the merged labels, so routes and
silences match one event, whichever watch saw the change first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze

__all__ = ["SHARED_KINDS", "Announced", "merge_watches", "precedence"]

SHARED_KINDS = frozenset(
    {EventKind.RUN_STATUS_CHANGED, EventKind.RUN_RETRYING, EventKind.GROUP_RUNS_FAILED}
)
"""Kinds about one run's upstream change, which several watches may see."""

_PRECISION = {
    WatchType.TRIGGER_RUN: 0,
    WatchType.PARALLEL_TASK_RUN: 0,
    WatchType.TRIGGER_RUNS: 1,
    WatchType.PARALLEL_TASK_GROUP: 2,
}


def precedence(ref: WatchRef) -> tuple[int, str]:
    """Sort key: the watch naming the subject most precisely first, then by key."""
    return _PRECISION.get(ref.type, 3), ref.key


def merge_watches(event: Event, covering: Iterable[WatchRef]) -> Event:
    """``event`` carrying every watch in ``covering`` (its own included): the most
    precise as ``watch`` with the merged labels, all of them in ``details.watches``."""
    refs = sorted({r.key: r for r in (event.watch, *covering)}.values(), key=precedence)
    if len(refs) == 1:
        return event
    labels: dict[str, str] = {}
    for ref in reversed(refs):  # the most precise watch is applied last: it wins
        labels.update(ref.labels)
    primary = replace(refs[0], labels=freeze(labels))
    details = {
        **event.details,
        "watches": [{"key": r.key, "name": r.name, "labels": dict(r.labels)} for r in refs],
    }
    return replace(event, watch=primary, details=freeze(details))


class Announced:
    """The ids of shared changes already published, the most recent ``capacity``."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, str] = OrderedDict()

    def first(self, events: Sequence[Event]) -> tuple[list[Event], list[tuple[Event, str]]]:
        """Split ``events`` into those announced now and the copies of changes another
        watch announced already (each with the key of the watch that did)."""
        fresh: list[Event] = []
        copies: list[tuple[Event, str]] = []
        for event in events:
            if event.kind not in SHARED_KINDS:
                fresh.append(event)
                continue
            by = self._ids.get(event.event_id)
            if by is not None:
                self._ids.move_to_end(event.event_id)
                copies.append((event, by))
                continue
            self._ids[event.event_id] = event.watch.key
            if len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
            fresh.append(event)
        return fresh, copies
