"""The mutable record the daemon keeps per watch: its pure state plus bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from watcher.core.events import WatchRef
from watcher.core.feed import FeedState, Phase
from watcher.core.schedule import SchedulePolicy
from watcher.core.statuses import Source
from watcher.core.watch import DiscoveryState, WatchState

__all__ = ["Kind", "WatchRuntime"]


class Kind(StrEnum):
    """What a runtime polls."""

    RUN = "run"
    GROUP = "group"
    DISCOVERY = "discovery"


_POLLING = FeedState()
"""Every runtime starts here (a frozen value: one instance serves them all)."""


@dataclass(eq=False, slots=True)
class WatchRuntime:
    """One polled thing: a configured watch, or a run discovered by a ``trigger_runs`` watch.

    ``ref`` is the identity events carry (for a discovered run, its parent's);
    ``subject_id`` is what is fetched.
    """

    key: str
    ref: WatchRef
    kind: Kind
    subject_id: str
    policy: SchedulePolicy
    state: WatchState | DiscoveryState
    parent: str | None = None
    children: set[str] | None = None
    """Keys of the runs a ``trigger_runs`` watch follows (None until it follows one)."""
    polls: int = 0
    errors: int = 0
    last_poll_at: float | None = None
    last_ok_at: float | None = None
    removed: bool = False
    generation: int = 0
    saved: dict[str, Any] | None = None
    """The durable state last written to the state file."""
    restored: bool = False
    """Read back from the state file and not polled successfully since."""
    finished_at: float | None = None
    """Unix time when the run reached a terminal status (for retention)."""
    feed: FeedState = _POLLING
    """The group's event stream, as the feed state machine sees it (``core/feed.py``)."""
    stream_cursor: str | None = None
    """The events stream's ``last_event_id``, to resume after a disconnect."""
    stream_suspect: bool = False
    """A cross-check poll disagreed with the stream; the next poll decides."""
    named: set[str] | None = None
    """Failed runs of a group that may be streamed, named so far by either path (polls
    reading the runs stream, or the events stream): neither names one twice, even when
    a stream replays its history."""
    pushed: bool = False
    tick_due: bool = False
    """Its next turn is a look at the clock (stuck, deadlines), not a poll: the feed
    reports its changes (``core/watch.py`` ``tick_run``)."""
    """An environment's realtime feed holds this run: polls only cross-check it."""
    attempts_ahead: int = 0
    """Attempts the realtime feed saw begin that the watch could not number yet (its
    baseline came from a row): the next poll numbers the baseline's attempt from them."""
    streamed_ahead: int = 0
    """Failures the events stream named since the runs stream was last read: the next
    read must go that much further past its cursor."""

    @property
    def streaming(self) -> bool:
        """An event stream is open and delivering: polls only cross-check, at
        ``max_interval``."""
        return self.feed.phase is Phase.STREAMING

    @property
    def source(self) -> Source:
        """The upstream this runtime polls."""
        return self.ref.source

    @property
    def active(self) -> bool:
        """Whether this watch changed recently; active watches are served first under a tight budget."""
        if self.kind is Kind.DISCOVERY:
            return False
        return self.state.schedule.interval <= self.policy.min_interval * 4

    @property
    def problem(self) -> str | None:
        """The reported problem, if the watch cannot see upstream now."""
        reported = self.state.health.reported
        return reported.value if reported else None
