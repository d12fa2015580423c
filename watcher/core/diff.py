"""Diff two snapshots into events. Pure: no I/O, no clock, no randomness.

The caller passes ``observed_at`` (when the new snapshot was taken) and, for
links, a ``url_template`` with an ``{id}`` placeholder.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from watcher.core.events import Event, EventKind, WatchRef, freeze, make_event_id
from watcher.core.snapshots import GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import ParallelStatus, Severity, Source, TriggerStatus, classify

__all__ = [
    "change_id",
    "counts_delta",
    "diff_group",
    "diff_run",
    "group_state",
    "link",
    "retry_attempt",
]

FAILED = ParallelStatus.FAILED.value
REATTEMPTING = TriggerStatus.REATTEMPTING.value


_TASK_FIELD = {Source.TRIGGER: "task", Source.PARALLEL: "processor", Source.WATCHER: "task"}


def change_id(source: Source, run_id: str, status: str, upstream_at: str | None) -> str:
    """The id of a run reaching ``status`` at the provider's ``upstream_at``.

    Identified by the run, where it went and when upstream says it did; not by where it
    came from (two replicas that polled at different moments, stream and poll modes,
    agree) nor by the watch that saw it (a ``trigger_run`` and a ``trigger_runs`` filter,
    or a group and a ``parallel_task_run`` watch, covering one run agree: one alert).
    """
    return make_event_id(source, run_id, "status", status, upstream_at)


def link(url_template: str | None, subject_id: str) -> str | None:
    """Fill ``{id}`` in a dashboard URL template, if there is one."""
    return url_template.replace("{id}", subject_id) if url_template else None


def group_state(snapshot: GroupSnapshot) -> str:
    """The group's state as a status word: ``active`` or ``inactive``."""
    return "active" if snapshot.is_active else "inactive"


def counts_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Per-status change between two count maps, zero entries left out."""
    keys = sorted(set(before) | set(after))
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)
    }


def _run_details(run: RunSnapshot) -> dict[str, Any]:
    details: dict[str, Any] = {"updated_at": run.updated_at}
    if run.error_message:
        details["error"] = run.error_message
    if run.task:
        # Trigger.dev names the task; Parallel only the processor that ran it.
        details[_TASK_FIELD[run.source]] = run.task
    if run.tags:
        details["tags"] = list(run.tags)
    if run.attempt is not None:
        details["attempt"] = run.attempt
    if run.group_id:
        details["group_id"] = run.group_id
    if run.environment:
        details["environment"] = run.environment
    if run.version:
        details["version"] = run.version
    if run.started_at:
        details["started_at"] = run.started_at
    if run.finished_at:
        details["finished_at"] = run.finished_at
        if (seconds := _seconds_between(run.started_at, run.finished_at)) is not None:
            details["duration_seconds"] = seconds
    if run.error_stack:
        details["error_stack"] = run.error_stack
    return details


def _seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from ``start`` to ``end`` (RFC 3339), when both parse."""
    if not start or not end:
        return None
    try:
        span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    except ValueError:
        return None
    return round(span.total_seconds(), 3)


def _attempt_reached(run: RunSnapshot) -> int | None:
    """The attempt the run is on, counting a legacy ``REATTEMPTING`` as the next one."""
    if run.attempt is None:
        return None
    return run.attempt + 1 if run.status == REATTEMPTING else run.attempt


def retry_attempt(previous: RunSnapshot | None, current: RunSnapshot) -> int | bool | None:
    """Whether going from ``previous`` to ``current`` is a retry, and of which attempt.

    Under Trigger.dev's current API version a retry is only visible as ``attemptCount``
    rising while the status stays non-terminal (``EXECUTING`` -> ``EXECUTING``); under
    the legacy set it reads ``REATTEMPTING`` first, which already names the next
    attempt, so the ``EXECUTING`` that follows is not a second retry. Returns the
    attempt being retried into, ``True`` for a retry of unknown number (a legacy
    ``REATTEMPTING`` without ``attemptCount``), ``None`` when it is no retry. A run
    that reached a terminal status is no retry: its outcome is.
    """
    if previous is None or classify(current.source, current.status).terminal:
        return None
    before, now = _attempt_reached(previous), _attempt_reached(current)
    if before is not None and now is not None:
        return now if now >= 2 and now > before else None
    return True if current.status == REATTEMPTING != previous.status else None


def _retry_event(
    watch: WatchRef,
    previous: RunSnapshot,
    current: RunSnapshot,
    attempt: int | bool,
    observed_at: datetime,
    url_template: str | None,
) -> Event:
    details = _run_details(current)
    if attempt is not True:
        details["attempt"] = attempt
        if previous.attempt is not None:
            details["previous_attempt"] = previous.attempt
    # One id per retried attempt, whichever API version, poll timing or watch showed it.
    event_id = make_event_id(
        current.source,
        current.run_id,
        EventKind.RUN_RETRYING,
        attempt if attempt is not True else current.updated_at,
    )
    return _run_event(
        watch,
        current,
        event_id,
        EventKind.RUN_RETRYING,
        Severity.WARNING,
        previous.status,
        details,
        observed_at,
        url_template,
    )


def _run_event(
    watch: WatchRef,
    current: RunSnapshot,
    event_id: str,
    kind: EventKind,
    severity: Severity,
    from_status: str | None,
    details: dict[str, Any],
    observed_at: datetime,
    url_template: str | None,
) -> Event:
    """An event about ``current`` run, reached from ``from_status``."""
    return Event(
        event_id=event_id,
        kind=kind,
        severity=severity,
        source=current.source,
        watch=watch,
        subject_id=current.run_id,
        from_status=from_status,
        to_status=current.status,
        observed_at=observed_at,
        details=freeze(details),
        url=link(url_template, current.run_id),
    )


def diff_run(
    watch: WatchRef,
    previous: RunSnapshot | None,
    current: RunSnapshot,
    *,
    observed_at: datetime,
    announce: bool = False,
    url_template: str | None = None,
) -> list[Event]:
    """Events for one run going from ``previous`` to ``current``.

    With no previous snapshot the observation is a silent baseline, unless
    ``announce`` asks for it to be reported (``notify_initial``, or a run newly
    discovered by a ``trigger_runs`` watch). A retry (see :func:`retry_attempt`) is
    one ``run.retrying`` event, whether or not the status word changed.
    """
    if previous is None and not announce:
        return []
    attempt = retry_attempt(previous, current)
    if previous is not None and attempt is not None:
        return [_retry_event(watch, previous, current, attempt, observed_at, url_template)]
    from_status = previous.status if previous is not None else None
    if from_status == current.status:
        return []
    info = classify(current.source, current.status)
    event_id = change_id(current.source, current.run_id, current.status, current.updated_at)
    details = _run_details(current)
    if not info.known:
        details["unknown_status"] = True
    return [
        _run_event(
            watch,
            current,
            event_id,
            EventKind.RUN_STATUS_CHANGED,
            info.severity,
            from_status,
            details,
            observed_at,
            url_template,
        )
    ]


def diff_group(
    watch: WatchRef,
    previous: GroupSnapshot | None,
    observation: GroupObservation,
    *,
    observed_at: datetime,
    announce: bool = False,
    url_template: str | None = None,
    run_url_template: str | None = None,
) -> list[Event]:
    """Events for a task group between two polls.

    Order: runs added, each newly failed run, the counts change, then the
    group finishing or becoming active again.
    """
    current = observation.snapshot
    gid = current.group_id
    state = group_state(current)
    url = link(url_template, gid)

    def event(
        kind: EventKind,
        severity: Severity,
        from_status: str | None,
        details: dict[str, Any],
        *id_parts: object,
    ) -> Event:
        return Event(
            event_id=make_event_id(watch.key, gid, kind, *id_parts),
            kind=kind,
            severity=severity,
            source=Source.PARALLEL,
            watch=watch,
            subject_id=gid,
            from_status=from_status,
            to_status=state,
            observed_at=observed_at,
            details=freeze(details),
            url=url,
        )

    events: list[Event] = []
    summary = {
        "num_task_runs": current.num_task_runs,
        "counts": dict(current.counts),
        "status_message": current.status_message,
        "modified_at": current.modified_at,
    }

    if previous is None:
        if not announce:
            return []
        kind = EventKind.GROUP_FINISHED if not current.is_active else EventKind.GROUP_COUNTS_CHANGED
        events.append(
            event(
                kind,
                _finished_severity(current) if not current.is_active else Severity.INFO,
                None,
                summary,
                "initial",
                current.modified_at,
            )
        )
        events.extend(_failed_run_events(watch, observation, observed_at, run_url_template))
        return events

    added = current.num_task_runs - previous.num_task_runs
    if added > 0:
        events.append(
            event(
                EventKind.GROUP_RUNS_ADDED,
                Severity.INFO,
                group_state(previous),
                {**summary, "added": added, "previous_num_task_runs": previous.num_task_runs},
                previous.num_task_runs,
                current.num_task_runs,
                current.modified_at,
            )
        )

    events.extend(_failed_run_events(watch, observation, observed_at, run_url_template))

    delta = counts_delta(previous.counts, current.counts)
    if delta:
        named = len({r.run_id for r in observation.failed_runs})
        if delta.get(FAILED, 0) > named:
            # Failures the runs stream has not named (yet): the count must page on its own.
            severity = Severity.FAILURE
        elif delta.get("action_required", 0) > 0:
            severity = Severity.WARNING
        else:
            severity = Severity.INFO
        counts_key = ",".join(f"{k}={v}" for k, v in sorted(current.counts.items()))
        events.append(
            event(
                EventKind.GROUP_COUNTS_CHANGED,
                severity,
                group_state(previous),
                {**summary, "previous_counts": dict(previous.counts), "delta": delta},
                counts_key,
                current.modified_at,
            )
        )

    if previous.is_active and not current.is_active:
        events.append(
            event(
                EventKind.GROUP_FINISHED,
                _finished_severity(current),
                "active",
                summary,
                current.num_task_runs,
                current.modified_at,
            )
        )
    elif not previous.is_active and current.is_active and previous.num_task_runs > 0:
        events.append(
            event(
                EventKind.GROUP_REACTIVATED,
                Severity.INFO,
                "inactive",
                summary,
                current.num_task_runs,
                current.modified_at,
            )
        )
    return events


def _finished_severity(snapshot: GroupSnapshot) -> Severity:
    return Severity.FAILURE if snapshot.count(FAILED) > 0 else Severity.SUCCESS


def _failed_run_events(
    watch: WatchRef,
    observation: GroupObservation,
    observed_at: datetime,
    run_url_template: str | None,
) -> list[Event]:
    """One event per failed run, so ids match however the runs were learned of."""
    events: list[Event] = []
    seen: set[str] = set()
    group = observation.snapshot
    for run in observation.failed_runs:
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        details: dict[str, Any] = {
            "group_id": group.group_id,
            "modified_at": run.modified_at,
            "group_counts": dict(group.counts),
            "num_task_runs": group.num_task_runs,
        }
        if run.error_message:
            details["error"] = run.error_message
        events.append(
            Event(
                # The run's own failure: the same id as a parallel_task_run watch gives it.
                event_id=change_id(Source.PARALLEL, run.run_id, FAILED, run.modified_at),
                kind=EventKind.GROUP_RUNS_FAILED,
                severity=Severity.FAILURE,
                source=Source.PARALLEL,
                watch=watch,
                subject_id=run.run_id,
                from_status=None,
                to_status=FAILED,
                observed_at=observed_at,
                details=freeze(details),
                url=link(run_url_template, run.run_id),
            )
        )
    return events
