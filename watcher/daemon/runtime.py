"""The mutable record the daemon keeps per watch: its pure state plus bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from watcher.core.events import WatchRef
from watcher.core.schedule import SchedulePolicy
from watcher.core.statuses import Source
from watcher.core.watch import DiscoveryState, WatchState

__all__ = ["Kind", "WatchRuntime"]


class Kind(StrEnum):
    """What a runtime polls."""

    RUN = "run"
    GROUP = "group"
    DISCOVERY = "discovery"


@dataclass(eq=False)
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
    children: set[str] = field(default_factory=set)
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
