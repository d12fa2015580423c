"""One watch's life as pure steps: observation or failure in, state + events + delay out.

The daemon fetches; everything it does with what it fetched happens here, where
a test can drive hours of polling without a socket or a sleep.
"""

from __future__ import annotations

import random
from collections.abc import Container, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from watcher.core.absence import AbsenceState
from watcher.core.deadlines import RunDeadlines, queued_clock
from watcher.core.diff import diff_group, diff_run, group_state, retry_attempt
from watcher.core.events import Event, EventKind, WatchRef, freeze, make_event_id
from watcher.core.health import HealthState, Problem, ProblemKind, on_failure, on_success
from watcher.core.run_timers import run_timers
from watcher.core.schedule import (
    Changed,
    Failed,
    Finished,
    Outcome,
    Parked,
    SchedulePolicy,
    ScheduleState,
    Unchanged,
    initial_state,
    next_delay,
)
from watcher.core.snapshots import GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import ParallelStatus, Severity, TriggerStatus, classify

__all__ = [
    "DiscoveryState",
    "DiscoveryStep",
    "Listing",
    "Step",
    "StepContext",
    "WatchState",
    "needs_failed_runs",
    "new_watch_state",
    "step_discovery",
    "step_failure",
    "step_group",
    "step_run",
    "tick_run",
]


@dataclass(frozen=True, slots=True)
class StepContext:
    """Everything a step needs besides the state: identity, time, policy, chance."""

    watch: WatchRef
    observed_at: datetime
    policy: SchedulePolicy
    rng: random.Random
    error_threshold: int = 3
    url_template: str | None = None
    run_url_template: str | None = None
    stuck_after: float | None = None
    deadlines: RunDeadlines | None = None


@dataclass(frozen=True, slots=True)
class WatchState:
    """What the watcher remembers about one watched run or group.

    ``announce`` makes the first observation notify (``notify_initial``, or a
    run discovered by a ``trigger_runs`` watch). For groups, ``cursor`` is the
    runs stream's ``last_event_id`` and ``known_failed`` how many failed runs
    have been read from it.
    """

    schedule: ScheduleState
    snapshot: RunSnapshot | GroupSnapshot | None = None
    health: HealthState = field(default_factory=HealthState)
    announce: bool = False
    cursor: str | None = None
    known_failed: int = 0
    done: bool = False
    status_since: datetime | None = None
    stuck_reported: bool = False
    queued_since: datetime | None = None
    """When the run's time in a queue began (``core/deadlines.py``); ``None`` if not queued."""
    deadlines_reported: frozenset[str] = frozenset()
    """The deadlines reported for the clocks still running (``Missed.token``)."""


def new_watch_state(
    policy: SchedulePolicy, *, announce: bool = False, snapshot: RunSnapshot | None = None
) -> WatchState:
    """The state of a watch that has not been polled yet."""
    return WatchState(schedule=initial_state(policy), announce=announce, snapshot=snapshot)


@dataclass(frozen=True, slots=True)
class Step:
    """What one step decided: the new state, events to send, when to poll next."""

    state: WatchState
    events: tuple[Event, ...]
    delay: float | None
    check_in: float | None = None
    """Seconds until the clock alone raises something (stuck, a deadline): a run whose
    polls are far apart is looked at then without a request (:func:`tick_run`)."""


def _recovered(ctx: StepContext, health: HealthState, cleared: ProblemKind | None) -> list[Event]:
    if cleared is None:
        return []
    return [
        Event(
            event_id=make_event_id(
                ctx.watch.key, EventKind.WATCH_RECOVERED, cleared, health.episode
            ),
            kind=EventKind.WATCH_RECOVERED,
            severity=Severity.INFO,
            source=ctx.watch.source,
            watch=ctx.watch,
            subject_id=ctx.watch.id,
            from_status=cleared.value,
            to_status="ok",
            observed_at=ctx.observed_at,
            details=freeze({"problem": cleared.value}),
        )
    ]


def is_older(candidate: str | None, current: str | None) -> bool:
    """True when ``candidate`` is strictly older than ``current`` (RFC 3339 strings)."""
    if candidate is None or current is None:
        return False
    try:
        return datetime.fromisoformat(candidate) < datetime.fromisoformat(current)
    except ValueError:
        return False


def _wake_hint(run: RunSnapshot, now: datetime) -> float | None:
    if run.status == TriggerStatus.DELAYED and run.delayed_until is not None:
        return max(0.0, (run.delayed_until - now).total_seconds())
    return None


def _entered_at(snapshot: RunSnapshot, observed_at: datetime) -> datetime:
    """When a run seen for the first time entered its status, at the latest now."""
    if snapshot.updated_at:
        try:
            upstream = datetime.fromisoformat(snapshot.updated_at)
        except ValueError:
            return observed_at
        if upstream.tzinfo is not None:
            return min(upstream, observed_at)
    return observed_at


def step_run(state: WatchState, snapshot: RunSnapshot, ctx: StepContext) -> Step:
    """Apply one successful poll of a single run."""
    health, cleared = on_success(state.health)
    events = _recovered(ctx, health, cleared)
    previous = state.snapshot if isinstance(state.snapshot, RunSnapshot) else None
    if previous is not None and is_older(snapshot.updated_at, previous.updated_at):
        # A late answer from an older replica or cache: never step backwards.
        snapshot = previous
    events += diff_run(
        ctx.watch,
        previous,
        snapshot,
        observed_at=ctx.observed_at,
        announce=state.announce,
        url_template=ctx.url_template,
    )
    # A retry is progress even when the status word stays (EXECUTING, attempt 2).
    changed = previous is not None and (
        previous.status != snapshot.status or retry_attempt(previous, snapshot) is not None
    )
    terminal = classify(snapshot.source, snapshot.status).terminal
    since, stuck_reported = state.status_since, state.stuck_reported
    if previous is None or since is None:
        since, stuck_reported = _entered_at(snapshot, ctx.observed_at), False
    elif changed:
        since, stuck_reported = ctx.observed_at, False
    wake = _wake_hint(snapshot, ctx.observed_at)
    queued_since = queued_clock(
        snapshot, previous, state.queued_since, ctx.observed_at if changed else since
    )
    timers = run_timers(
        ctx.watch,
        snapshot,
        now=ctx.observed_at,
        since=since,
        stuck_after=ctx.stuck_after,
        stuck_reported=stuck_reported,
        deadlines=ctx.deadlines,
        queued_since=queued_since,
        deadlines_reported=state.deadlines_reported,
        url_template=ctx.url_template,
    )
    events += timers.events
    stuck_reported = timers.stuck_reported
    # Look again when it would count as stuck or late, not a max_interval later.
    check_by = timers.check_in
    # A run that moved and came back (EXECUTING -> WAITING -> EXECUTING between two
    # polls) shows the same status but a new ``updated_at``: it is active, keep pace.
    moved = previous is not None and snapshot.updated_at != previous.updated_at
    outcome: Outcome
    if terminal:
        outcome = Finished()
    elif changed or moved:
        outcome = Changed(wake_in=wake, check_by=check_by)
    else:
        # Quiet since the status was entered, or since the run last moved upstream.
        quiet = (
            ctx.observed_at - max(since, _entered_at(snapshot, ctx.observed_at))
        ).total_seconds()
        outcome = Unchanged(wake_in=wake, check_by=check_by, quiet_for=quiet)
    schedule, delay = next_delay(state.schedule, outcome, ctx.policy, ctx.rng)
    new = replace(
        state,
        snapshot=snapshot,
        schedule=schedule,
        health=health,
        announce=False,
        done=terminal,
        status_since=since,
        stuck_reported=stuck_reported,
        queued_since=queued_since,
        deadlines_reported=timers.deadlines_reported,
    )
    return Step(new, tuple(events), delay, check_by)


def tick_run(state: WatchState, ctx: StepContext) -> Step:
    """Look at the clock for a run without polling it (the realtime feed reports its
    changes): ``stuck_after`` and deadlines against the run as last seen. The schedule
    is left as it stands (``delay`` 0: the caller's backstop)."""
    run = state.snapshot
    if not isinstance(run, RunSnapshot) or state.done or state.status_since is None:
        return Step(state, (), 0.0)
    timers = run_timers(
        ctx.watch,
        run,
        now=ctx.observed_at,
        since=state.status_since,
        stuck_after=ctx.stuck_after,
        stuck_reported=state.stuck_reported,
        deadlines=ctx.deadlines,
        queued_since=state.queued_since,
        deadlines_reported=state.deadlines_reported,
        url_template=ctx.url_template,
    )
    new = replace(
        state,
        stuck_reported=timers.stuck_reported,
        deadlines_reported=timers.deadlines_reported,
    )
    return Step(new, timers.events, 0.0, timers.check_in)


def needs_failed_runs(state: WatchState, snapshot: GroupSnapshot) -> bool:
    """Whether this poll must read the group's failed-runs stream.

    It must when the group counts more failed runs than the stream has named so
    far; a read that comes up short is simply repeated on the next poll.
    """
    return snapshot.count(ParallelStatus.FAILED) > state.known_failed


def step_group(
    state: WatchState,
    observation: GroupObservation,
    ctx: StepContext,
    stream_problem: Problem | None = None,
) -> Step:
    """Apply one poll of a task group (status, plus the failed runs read).

    When the group answered but its runs stream did not (``stream_problem``),
    the status is still applied, and the stream's problem counts towards the
    watch's health: failures are then only known by number, not by name.
    """
    events: list[Event]
    if stream_problem is None:
        health, cleared = on_success(state.health)
        events = _recovered(ctx, health, cleared)
    else:
        health, report = on_failure(state.health, stream_problem, ctx.error_threshold)
        events = [_problem_event(ctx, health, stream_problem)] if report is not None else []
    previous = state.snapshot if isinstance(state.snapshot, GroupSnapshot) else None
    current = observation.snapshot
    events += diff_group(
        ctx.watch,
        previous,
        observation,
        observed_at=ctx.observed_at,
        announce=state.announce,
        url_template=ctx.url_template,
        run_url_template=ctx.run_url_template,
    )
    known_failed = state.known_failed + len({r.run_id for r in observation.failed_runs})
    # Runs retried by the provider leave the failed count; let the next failure be read.
    known_failed = min(known_failed, current.count(ParallelStatus.FAILED))
    changed = previous is not None and (
        previous.counts != current.counts
        or previous.is_active != current.is_active
        or previous.num_task_runs != current.num_task_runs
        or bool(observation.failed_runs)
    )
    outcome: Outcome
    if changed:
        outcome = Changed()
    elif not current.is_active:
        # Runs can be added to a finished group later: keep a slow eye on it.
        outcome = Parked()
    else:
        outcome = Unchanged()
    schedule, delay = next_delay(state.schedule, outcome, ctx.policy, ctx.rng)
    new = replace(
        state,
        snapshot=current,
        schedule=schedule,
        health=health,
        announce=False,
        cursor=observation.cursor if observation.streamed else state.cursor,
        known_failed=known_failed,
    )
    return Step(new, tuple(events), delay)


def _problem_event(ctx: StepContext, health: HealthState, problem: Problem) -> Event:
    details: dict[str, Any] = {
        "problem": problem.kind.value,
        "message": problem.message,
        "consecutive_failures": health.failures,
    }
    if problem.status_code is not None:
        details["status_code"] = problem.status_code
    return Event(
        event_id=make_event_id(ctx.watch.key, EventKind.WATCH_ERROR, problem.kind, health.episode),
        kind=EventKind.WATCH_ERROR,
        severity=Severity.WARNING,
        source=ctx.watch.source,
        watch=ctx.watch,
        subject_id=ctx.watch.id,
        from_status="ok",
        to_status=problem.kind.value,
        observed_at=ctx.observed_at,
        details=freeze(details),
    )


def _failure(
    health: HealthState, schedule: ScheduleState, problem: Problem, ctx: StepContext
) -> tuple[HealthState, ScheduleState, list[Event], float | None]:
    health, report = on_failure(health, problem, ctx.error_threshold)
    events = [_problem_event(ctx, health, problem)] if report is not None else []
    outcome = Failed(retry_after=problem.retry_after, permanent=problem.kind.definitive)
    schedule, delay = next_delay(schedule, outcome, ctx.policy, ctx.rng)
    return health, schedule, events, delay


def step_failure(state: WatchState, problem: Problem, ctx: StepContext) -> Step:
    """Apply one failed poll: back off, and report the problem when it is due."""
    health, schedule, events, delay = _failure(state.health, state.schedule, problem, ctx)
    return Step(replace(state, health=health, schedule=schedule), tuple(events), delay)


@dataclass(frozen=True, slots=True)
class Listing:
    """One discovery pass over the list endpoint.

    ``complete`` is false when the pass stopped at the page cap before the end
    of the filtered window.
    """

    runs: tuple[RunSnapshot, ...]
    complete: bool = True


@dataclass(frozen=True, slots=True)
class DiscoveryState:
    """A ``trigger_runs`` watch: the run ids of its window already accounted for."""

    schedule: ScheduleState
    health: HealthState = field(default_factory=HealthState)
    seen: frozenset[str] = frozenset()
    baseline_done: bool = False
    absence: AbsenceState | None = None
    """Where its ``expect:`` stands (``core/absence.py``)."""


@dataclass(frozen=True, slots=True)
class DiscoveryStep:
    """New runs to announce and watch, runs of the baseline to watch silently."""

    state: DiscoveryState
    events: tuple[Event, ...]
    delay: float | None
    new_runs: tuple[RunSnapshot, ...] = ()
    baseline_runs: tuple[RunSnapshot, ...] = ()


def step_discovery(
    state: DiscoveryState,
    listing: Listing,
    ctx: StepContext,
    watched: Container[str] = frozenset(),
) -> DiscoveryStep:
    """Apply one discovery pass.

    The first pass is a silent baseline. Later passes return the runs not seen
    before and not already ``watched``. A complete pass prunes ids that left the
    window, so memory follows the window, not the daemon's age.
    """
    health, cleared = on_success(state.health)
    events = _recovered(ctx, health, cleared)
    ids = [run.run_id for run in listing.runs]
    unique: dict[str, RunSnapshot] = {}
    for run in listing.runs:
        unique.setdefault(run.run_id, run)
    if not state.baseline_done:
        new: Sequence[RunSnapshot] = ()
        baseline: Sequence[RunSnapshot] = tuple(unique.values())
    else:
        new = tuple(
            r for r in unique.values() if r.run_id not in state.seen and r.run_id not in watched
        )
        baseline = ()
    seen = frozenset(ids) if listing.complete else state.seen | frozenset(ids)
    schedule, delay = next_delay(state.schedule, Unchanged(), ctx.policy, ctx.rng)
    new_state = replace(state, health=health, schedule=schedule, seen=seen, baseline_done=True)
    return DiscoveryStep(new_state, tuple(events), delay, tuple(new), tuple(baseline))


def step_discovery_failure(
    state: DiscoveryState, problem: Problem, ctx: StepContext
) -> DiscoveryStep:
    """Apply one failed discovery pass."""
    health, schedule, events, delay = _failure(state.health, state.schedule, problem, ctx)
    return DiscoveryStep(replace(state, health=health, schedule=schedule), tuple(events), delay)


def describe(state: WatchState) -> str:
    """A short human description of where a watch stands (for ``once``)."""
    snap = state.snapshot
    if snap is None:
        return "not seen yet"
    if isinstance(snap, RunSnapshot):
        return snap.status
    counts = ", ".join(f"{k}={v}" for k, v in sorted(snap.counts.items()) if v)
    return f"{group_state(snap)} ({snap.num_task_runs} runs{': ' + counts if counts else ''})"


def _upstream_time(event: Event) -> datetime | None:
    details = event.details
    stamp = details.get("updated_at") or details.get("modified_at") or details.get("due_at")
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def mark_late(events: Sequence[Event], started_at: datetime) -> tuple[Event, ...]:
    """Mark events the watcher saw late: upstream changed them before it started.

    Used for the first poll of a watch restored from the state file, whose
    transitions may have happened while the daemon was down (``seen_late``).
    """
    out = []
    for event in events:
        upstream = _upstream_time(event)
        if event.kind in _LATE_KINDS and (upstream is None or upstream < started_at):
            event = replace(event, details=freeze({**event.details, "seen_late": True}))
        out.append(event)
    return tuple(out)


_LATE_KINDS = frozenset(
    {
        EventKind.RUN_STATUS_CHANGED,
        EventKind.RUN_RETRYING,
        EventKind.GROUP_COUNTS_CHANGED,
        EventKind.GROUP_FINISHED,
        EventKind.GROUP_REACTIVATED,
        EventKind.GROUP_RUNS_ADDED,
        EventKind.GROUP_RUNS_FAILED,
        EventKind.RUN_DEADLINE_MISSED,
        EventKind.RUNS_ABSENT,
    }
)
