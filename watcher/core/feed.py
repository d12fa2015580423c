"""A push feed's life as data: its phases, its inputs, every transition, the actions.

In the spirit of h11's ``_state.py``: the daemon reports what happened (an input),
:func:`advance` returns the next state and the actions to perform, and the daemon
performs them. Nothing here opens a connection, sleeps or reads the clock: the time
comes with the inputs, randomness from the caller's ``rng``.

The Parallel group event stream runs on it; any feed that pushes changes for a
subject the watcher also polls (Trigger.dev's realtime feed next) can. ::

    POLLING ──Want──▶ QUEUED ──Start──▶ CONNECTING ──Delivering──▶ STREAMING
       ▲                │                  │   ▲                       │
       │               Stop          Refused/Ended                  Ended
       │                ▼                  ▼   │ Wake                  ▼
       └──── Stop, or three failures ── BACKING_OFF ◀── a failure ─────┘
             (fall back: polled until retry_at)

A clean end (the server closed a stream that delivered, the idle or age limit)
reconnects at once; a failure backs off with jitter; a refusal (4xx) or three
failures in a row fall back to polling, for ``retry_after`` after a refusal and for
15-30 s after passing failures. ``Stop`` (the subject finished, was removed, or a
reload said ``poll``) returns to polling from any phase, with a poll at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import assert_never

from watcher.core.health import Problem

__all__ = [
    "Action",
    "Connect",
    "Delivering",
    "Ended",
    "Enqueue",
    "FallBack",
    "FeedPolicy",
    "FeedState",
    "Input",
    "InvalidTransition",
    "Phase",
    "Refused",
    "Release",
    "Sleep",
    "Start",
    "Stop",
    "StretchPolls",
    "Wake",
    "Want",
    "advance",
]


class Phase(StrEnum):
    """Where a subject's feed stands."""

    POLLING = "polling"
    """No feed: polls carry the subject (after a fall-back, until ``retry_at``)."""
    QUEUED = "queued"
    """A feed was asked for; a worker will take it."""
    CONNECTING = "connecting"
    """A connection is being opened."""
    STREAMING = "streaming"
    """The feed delivers: polls only cross-check, at ``max_interval``."""
    BACKING_OFF = "backing_off"
    """The connection ended badly: a new one after a wait."""


@dataclass(frozen=True, slots=True)
class FeedState:
    """One subject's feed: its phase, failures in a row, and the earliest time to ask again."""

    phase: Phase = Phase.POLLING
    failures: int = 0
    retry_at: float = 0.0


@dataclass(frozen=True, slots=True)
class FeedPolicy:
    """The limits of one feed (from ``sources.parallel``)."""

    retry_after: float = 600.0
    """After a refusal (4xx): poll this long before asking again."""
    transient_retry: float = 30.0
    """After passing failures: poll at most this long (jittered from half of it)."""
    max_failures: int = 3
    max_backoff: float = 30.0


# -- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Want:
    """A poll found the subject active and its feed allowed."""

    now: float


@dataclass(frozen=True, slots=True)
class Start:
    """A worker took the subject."""


@dataclass(frozen=True, slots=True)
class Delivering:
    """The first event of a connection arrived."""


@dataclass(frozen=True, slots=True)
class Ended:
    """A connection ended: ``clean`` when it delivered and closed normally (or hit its
    idle or age limit); else ``problem`` says why, if anything does."""

    now: float
    clean: bool
    problem: Problem | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """Opening the connection failed (a refusal, or the upstream unreachable)."""

    now: float
    problem: Problem


@dataclass(frozen=True, slots=True)
class Wake:
    """The back-off wait is over."""


@dataclass(frozen=True, slots=True)
class Stop:
    """The subject no longer wants a feed (finished, removed, set to poll), or the worker
    failed (``problem`` None and ``crashed``)."""

    now: float = 0.0
    crashed: bool = False


Input = Want | Start | Delivering | Ended | Refused | Wake | Stop


# -- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Hand the subject to a feed worker (if one is free; else it stays polled)."""


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a connection, resuming from the last event id."""


@dataclass(frozen=True, slots=True)
class StretchPolls:
    """The feed delivers: the next poll is a cross-check, ``max_interval`` away."""


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long before the next input (``Wake``)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class FallBack:
    """Tell the operator the subject is polled instead, for ``wait`` seconds."""

    problem: Problem | None
    wait: float


@dataclass(frozen=True, slots=True)
class Release:
    """The worker lets the subject go; polls take over at their own pace, starting now."""


Action = Enqueue | Connect | StretchPolls | Sleep | FallBack | Release


class InvalidTransition(Exception):
    """An input the phase does not expect: a bug in the caller, not an upstream fault."""


# -- transitions ---------------------------------------------------------------------------

_WORKING = frozenset({Phase.QUEUED, Phase.CONNECTING, Phase.STREAMING, Phase.BACKING_OFF})


def backoff(failures: int, policy: FeedPolicy, rng: random.Random) -> float:
    """The jittered wait before reconnect number ``failures`` (0.5 s doubling, capped)."""
    cap = min(policy.max_backoff, 0.5 * 2.0**failures)
    return rng.uniform(cap / 2, cap)


def _fall_back(
    state: FeedState, now: float, problem: Problem | None, policy: FeedPolicy, rng: random.Random
) -> tuple[FeedState, tuple[Action, ...]]:
    wait = policy.retry_after
    if problem is not None and not problem.kind.definitive:
        wait = min(wait, rng.uniform(policy.transient_retry / 2, policy.transient_retry))
    return (
        FeedState(Phase.POLLING, 0, now + wait),
        (FallBack(problem, wait), Release()),
    )


def _failed(
    state: FeedState,
    now: float,
    problem: Problem | None,
    policy: FeedPolicy,
    rng: random.Random,
    *,
    at_once: bool = False,
) -> tuple[FeedState, tuple[Action, ...]]:
    failures = state.failures + 1
    if at_once or failures >= policy.max_failures:
        return _fall_back(state, now, problem, policy, rng)
    return (
        replace(state, phase=Phase.BACKING_OFF, failures=failures),
        (Sleep(backoff(failures, policy, rng)),),
    )


def advance(
    state: FeedState, event: Input, policy: FeedPolicy, rng: random.Random
) -> tuple[FeedState, tuple[Action, ...]]:
    """The state after ``event`` and the actions to perform, in order."""
    phase = state.phase
    match event:
        case Want(now=now):
            if phase is not Phase.POLLING or now < state.retry_at:
                return state, ()  # already working on it, or still falling back
            return replace(state, phase=Phase.QUEUED), (Enqueue(),)
        case Start():
            if phase is not Phase.QUEUED:
                raise InvalidTransition(f"Start in {phase}")
            return FeedState(Phase.CONNECTING, 0, state.retry_at), (Connect(),)
        case Delivering():
            if phase is Phase.STREAMING:
                return state, ()
            if phase is not Phase.CONNECTING:
                raise InvalidTransition(f"Delivering in {phase}")
            return replace(state, phase=Phase.STREAMING), (StretchPolls(),)
        case Ended(now=now, clean=clean, problem=problem):
            if phase not in (Phase.CONNECTING, Phase.STREAMING):
                raise InvalidTransition(f"Ended in {phase}")
            if clean and problem is None:
                return FeedState(Phase.CONNECTING, 0, state.retry_at), (Connect(),)
            return _failed(state, now, problem, policy, rng)
        case Refused(now=now, problem=problem):
            if phase is not Phase.CONNECTING:
                raise InvalidTransition(f"Refused in {phase}")
            return _failed(state, now, problem, policy, rng, at_once=problem.kind.definitive)
        case Wake():
            if phase is not Phase.BACKING_OFF:
                raise InvalidTransition(f"Wake in {phase}")
            return replace(state, phase=Phase.CONNECTING), (Connect(),)
        case Stop(now=now, crashed=crashed):
            if phase not in _WORKING:
                return state, ()
            if crashed:
                return _fall_back(state, now, None, policy, rng)
            # From QUEUED no worker held it: nothing to release.
            actions: tuple[Action, ...] = () if phase is Phase.QUEUED else (Release(),)
            return FeedState(Phase.POLLING, 0, state.retry_at), actions
        case _:
            assert_never(event)
