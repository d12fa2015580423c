"""Silences and maintenance windows: matchers plus when they hold. Pure; ``now`` is given.

A silence holds between ``starts_at`` and ``ends_at`` (either may be open), and,
when it has recurring ``windows``, only inside one of them, in the window's own
time zone. A window whose end is before its start runs past midnight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

from watcher.core.events import Event
from watcher.core.routing import Matcher, matches

__all__ = ["Silence", "Window", "silenced_by"]


@dataclass(frozen=True, slots=True)
class Window:
    """A recurring window: on ``days`` (0 = Monday) from ``start`` to ``end`` local time."""

    start: time
    end: time
    timezone: ZoneInfo
    days: frozenset[int] = frozenset(range(7))

    def contains(self, now: datetime) -> bool:
        """Whether the aware datetime ``now`` falls inside this window."""
        local = now.astimezone(self.timezone)
        moment = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.start <= self.end:
            return day in self.days and self.start <= moment < self.end
        # Past midnight: the part after ``start`` belongs to today, the part before
        # ``end`` to the window that began yesterday.
        return (day in self.days and moment >= self.start) or (
            (day - 1) % 7 in self.days and moment < self.end
        )


@dataclass(frozen=True, slots=True)
class Silence:
    """Events matching ``matchers`` are not sent while the silence holds."""

    id: str
    matchers: Mapping[str, Matcher] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    windows: tuple[Window, ...] = ()
    comment: str | None = None

    def active(self, now: datetime) -> bool:
        """Whether the silence holds at ``now`` (an aware datetime)."""
        if self.starts_at is not None and now < self.starts_at:
            return False
        if self.ends_at is not None and now >= self.ends_at:
            return False
        return not self.windows or any(w.contains(now) for w in self.windows)


def silenced_by(silences: Sequence[Silence], event: Event, now: datetime) -> Silence | None:
    """The first silence that holds for ``event`` at ``now``, if any.

    Reminders and resolved messages are matched by the event that opened their
    condition, like routes.
    """
    subject = event.origin
    for silence in silences:
        if silence.active(now) and matches(silence.matchers, subject):
            return silence
    return None
