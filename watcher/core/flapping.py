"""Flapping: a condition that opens and closes over and over. Pure.

A condition that opens more than ``opens`` times within ``window`` seconds is
flapping: one message says so, and its opening and resolved messages are held
back until it has stayed put (open or closed) for ``quiet`` seconds; then one
message says where it settled. Defaults: more than 3 opens in an hour, 30 minutes
of quiet (Nagios's flap detection and Alertmanager's users' requests: #204, #3048).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

__all__ = ["FlapPolicy", "FlapState", "on_change", "settled", "stale"]


@dataclass(frozen=True, slots=True)
class FlapPolicy:
    """When a condition counts as flapping, and when it has settled."""

    opens: int = 3
    window: float = 3600.0
    quiet: float = 1800.0


@dataclass(frozen=True, slots=True)
class FlapState:
    """One condition key's recent openings, and whether it is flapping."""

    opened_at: tuple[datetime, ...] = ()
    last_change: datetime | None = None
    flapping_since: datetime | None = None

    @property
    def flapping(self) -> bool:
        """Whether its messages are held back."""
        return self.flapping_since is not None


def on_change(
    state: FlapState, opened: bool, now: datetime, policy: FlapPolicy
) -> tuple[FlapState, bool]:
    """Account for an open (``opened``) or a close; also say whether flapping starts now."""
    if not opened:
        return replace(state, last_change=now), False
    recent = tuple(t for t in state.opened_at if (now - t).total_seconds() < policy.window)
    recent = (*recent, now)[-(policy.opens + 1) :]
    starts = not state.flapping and len(recent) > policy.opens
    return (
        FlapState(recent, now, now if starts else state.flapping_since),
        starts,
    )


def settled(state: FlapState, now: datetime, policy: FlapPolicy) -> bool:
    """Whether a flapping condition has stayed put for the quiet period."""
    if not state.flapping or state.last_change is None:
        return False
    return (now - state.last_change).total_seconds() >= policy.quiet


def stale(state: FlapState, now: datetime, policy: FlapPolicy) -> bool:
    """Whether a non-flapping entry no longer holds an opening inside the window."""
    return not state.flapping and all(
        (now - t).total_seconds() >= policy.window for t in state.opened_at
    )
