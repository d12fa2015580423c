"""Adaptive polling policy: when to look again. Pure; randomness is injected.

- A change resets the interval to ``min_interval``.
- A subject that changed less than ``linger`` x ``min_interval`` ago stays at
  ``min_interval``: one change is often the first of several (EXECUTING, then
  a retry, then COMPLETED), and the next one should not wait for a grown interval.
- After that, no change grows it geometrically (``backoff``) up to ``max_interval``,
  and to at least ``quiet_ratio`` of the time the subject has been quiet: a run that
  has not changed for an hour is not asked again in two seconds. When the
  request budget is short, this is what frees it for the watches that change.
- Errors back off exponentially with full jitter, never sooner than the
  server asked (``Retry-After`` and friends), capped at ``max_interval``.
- A terminal run is not polled again; a finished group is parked at
  ``max_interval``; a delayed run sleeps until it is due.

Jitter only ever shortens a delay, so a watch that changes is looked at again
within ``min_interval``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = [
    "Changed",
    "Failed",
    "Finished",
    "Outcome",
    "Parked",
    "SchedulePolicy",
    "ScheduleState",
    "Unchanged",
    "initial_state",
    "next_delay",
]


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """Knobs of the polling policy (seconds)."""

    min_interval: float = 2.0
    max_interval: float = 300.0
    backoff: float = 1.5
    jitter: float = 0.1
    quiet_ratio: float = 0.5
    linger: float = 4.0

    def __post_init__(self) -> None:
        if self.min_interval <= 0 or self.max_interval < self.min_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        if self.backoff < 1 or not 0 <= self.jitter < 1:
            raise ValueError("need backoff >= 1 and 0 <= jitter < 1")
        if self.quiet_ratio < 0 or self.linger < 0:
            raise ValueError("need quiet_ratio >= 0 and linger >= 0")


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """The current base interval and the run of consecutive errors."""

    interval: float
    errors: int = 0


def initial_state(policy: SchedulePolicy) -> ScheduleState:
    """Where a new watch starts: polling at ``min_interval``."""
    return ScheduleState(interval=policy.min_interval)


@dataclass(frozen=True, slots=True)
class Changed:
    """The poll saw a change. See :class:`Unchanged` for the hints."""

    wake_in: float | None = None
    check_by: float | None = None


@dataclass(frozen=True, slots=True)
class Unchanged:
    """The poll saw nothing new.

    ``wake_in``: nothing is due before then (a delayed run); sleep until it.
    ``check_by``: look again by then at the latest (a run about to count as stuck).
    ``quiet_for``: how long the subject has not changed (seconds), if known.
    """

    wake_in: float | None = None
    check_by: float | None = None
    quiet_for: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The poll failed. ``permanent`` problems (401, 404) are retried slowly."""

    retry_after: float | None = None
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class Finished:
    """The subject reached a terminal state: stop polling."""


@dataclass(frozen=True, slots=True)
class Parked:
    """Nothing will happen soon but it may (a finished group): poll slowly."""


Outcome = Changed | Unchanged | Failed | Finished | Parked


def _jittered(base: float, policy: SchedulePolicy, rng: random.Random) -> float:
    return base * (1.0 - rng.uniform(0.0, policy.jitter))


def next_delay(
    state: ScheduleState, outcome: Outcome, policy: SchedulePolicy, rng: random.Random
) -> tuple[ScheduleState, float | None]:
    """The next state and the delay before the next poll (``None``: stop)."""
    lo, hi = policy.min_interval, policy.max_interval
    match outcome:
        case Finished():
            return ScheduleState(interval=lo), None
        case Parked():
            return ScheduleState(interval=hi), _jittered(hi, policy, rng)
        case Failed(retry_after=retry_after, permanent=permanent):
            errors = state.errors + 1
            new = ScheduleState(interval=state.interval, errors=errors)
            if permanent:
                delay = _jittered(hi, policy, rng)
            else:
                cap = min(hi, lo * 2.0 ** min(errors, 32))
                delay = max(lo, rng.uniform(0.0, cap))
            if retry_after is not None:
                # The server's word wins, even past max_interval: asking sooner is rude.
                delay = max(delay, retry_after)
            return new, delay
        case Changed(wake_in=wake_in, check_by=check_by):
            new = ScheduleState(interval=lo)
            return new, _hinted(_jittered(lo, policy, rng), wake_in, check_by, policy)
        case Unchanged(wake_in=wake_in, check_by=check_by, quiet_for=quiet_for):
            if quiet_for is not None and quiet_for < policy.linger * lo:
                interval = lo
            else:
                grown = state.interval * policy.backoff
                interval = min(hi, max(lo, grown, (quiet_for or 0.0) * policy.quiet_ratio))
            new = ScheduleState(interval=interval)
            return new, _hinted(_jittered(interval, policy, rng), wake_in, check_by, policy)
    raise AssertionError(f"unknown outcome {outcome!r}")  # pragma: no cover


def _hinted(
    delay: float, wake_in: float | None, check_by: float | None, policy: SchedulePolicy
) -> float:
    """Apply the hints, bounded by the policy."""
    if wake_in is not None:
        delay = min(policy.max_interval, max(policy.min_interval, wake_in))
    if check_by is not None:
        delay = min(delay, max(policy.min_interval, check_by))
    return delay
