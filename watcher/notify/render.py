"""Plain-text messages: the default for plain services, and the fallback that cannot fail.

Titles say what happened and to what (``[FAILED] send-invoice run_abc``); bodies
say what to act on: the transition, the error, the watch, a link. A batch of
events from one group becomes one digest. Pure.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watcher.core.durations import format_duration
from watcher.core.events import Event, EventKind, WatchType
from watcher.core.statuses import Severity
from watcher.notify.serialize import event_to_json, events_to_json, rfc3339

__all__ = [
    "MAX_LISTED",
    "Message",
    "ack_command",
    "counts_text",
    "default_title",
    "event_line",
    "render_json",
    "render_text",
    "transition",
    "worst_severity",
]

MAX_LISTED = 20
_MAX_ERROR = 500
_TITLE_IDS = 5


@dataclass(frozen=True, slots=True)
class Message:
    """What a notifier sends: title, body, severity (apprise notify type), body format."""

    title: str
    body: str
    severity: Severity
    body_format: str = "text"
    events: tuple[Event, ...] = ()
    """The events it tells of, for notifiers that act per event (PagerDuty, a Slack bot)."""


def counts_text(counts: Mapping[str, Any]) -> str:
    """``completed 10, failed 2``."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "no runs"


def clip(text: str, limit: int = _MAX_ERROR) -> str:
    """One line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def worst_severity(events: Sequence[Event]) -> Severity:
    """The most urgent severity among ``events``."""
    order = list(Severity)
    return min((e.severity for e in events), key=order.index)


def _who(event: Event) -> str:
    """The name a human knows a run by: its task, else the watch's name."""
    task = event.details.get("task")
    if event.watch.type in (WatchType.TRIGGER_RUN, WatchType.TRIGGER_RUNS) and task:
        return str(task)
    return event.watch.display_name


def _run_name(event: Event) -> str:
    who = _who(event)
    return who if who == event.subject_id else f"{who} {event.subject_id}"


_CONDITION_LABEL = {
    "watch.problem": "watch problem",
    "run.action_required": "action required",
    "run.stuck": "stuck",
    "run.deadline_missed": "deadline missed",
    "runs.absent": "expected run absent",
    "group.failing": "failing runs",
}


def default_title(event: Event) -> str:
    """The title of a message about one event."""
    name = event.watch.display_name
    d = event.details
    match event.kind:
        case EventKind.RUN_STATUS_CHANGED:
            return f"[{event.to_status.upper()}] {_run_name(event)}"
        case EventKind.RUN_RETRYING:
            attempt = d.get("attempt")
            which = f"attempt {attempt}" if attempt is not None else "another attempt"
            return f"[RETRYING] {_run_name(event)}: {which} after a failure"
        case EventKind.GROUP_RUNS_FAILED:
            return f"[FAILED] run {event.subject_id} failed in {name}"
        case EventKind.GROUP_FINISHED:
            return f"[FINISHED] {name}: {counts_text(d.get('counts', {}))}"
        case EventKind.GROUP_REACTIVATED:
            return f"[ACTIVE] {name} is running again ({d.get('num_task_runs')} runs)"
        case EventKind.GROUP_RUNS_ADDED:
            return f"[RUNS ADDED] {name}: +{d.get('added')} ({d.get('num_task_runs')} in all)"
        case EventKind.GROUP_COUNTS_CHANGED:
            return f"[PROGRESS] {name}: {counts_text(d.get('counts', {}))}"
        case EventKind.WATCH_ERROR:
            return f"[WATCH {event.to_status.upper()}] {name}: cannot see upstream"
        case EventKind.WATCH_RECOVERED:
            return f"[RECOVERED] {name}: watching again"
        case EventKind.RUN_STUCK:
            stuck = format_duration(float(d.get("stuck_seconds", 0)))
            return f"[STUCK] {_run_name(event)}: {event.to_status} for {stuck}"
        case EventKind.RUN_DEADLINE_MISSED:
            limit = format_duration(float(d.get("limit_seconds", 0)))
            late = format_duration(float(d.get("elapsed_seconds", 0)))
            what = {"queued": "queued", "running": "running", "total": "not finished"}.get(
                str(d.get("deadline")), str(d.get("deadline"))
            )
            return (
                f"[DEADLINE] {_run_name(event)}: {what} for {late} "
                f"(limit {limit}), now {event.to_status}"
            )
        case EventKind.RUNS_ABSENT:
            return (
                f"[ABSENT] {name}: no {d.get('expected_status')} run by {d.get('window_end')} "
                f"({d.get('seen_text')})"
            )
        case EventKind.CONDITION_REMINDER:
            cause = event.cause or event
            open_for = format_duration(float(d.get("open_seconds", 0)))
            return f"[REMINDER] {default_title(cause).split('] ', 1)[-1]} (open {open_for})"
        case EventKind.CONDITION_RESOLVED:
            cause = event.cause or event
            label = _CONDITION_LABEL.get(str(d.get("condition")), str(d.get("condition")))
            took = format_duration(float(d.get("duration_seconds", 0)))
            who = (
                name
                if cause.kind in (EventKind.WATCH_ERROR, EventKind.RUNS_ABSENT)
                else _run_name(cause)
            )
            return f"[RESOLVED] {who}: {label} cleared after {took}"
        case EventKind.NOTIFIER_FAILED:
            return f"[NOTIFIER FAILED] {event.subject_id}: {d.get('undeliverable', '?')} notifications undeliverable"
        case EventKind.STATE_UNAVAILABLE:
            return f"[DURABILITY LOST] state file {event.subject_id} not writable: watching goes on in memory"
        case EventKind.STATE_RECOVERED:
            return f"[DURABILITY RESTORED] state file {event.subject_id} writable again"
        case EventKind.CLUSTER_DEGRADED:
            return f"[CLUSTER DEGRADED] {event.subject_id}: Redis unreachable, replicas fail open"
        case EventKind.CLUSTER_RECOVERED:
            return (
                f"[CLUSTER RECOVERED] {event.subject_id}: Redis answers, one owner per watch again"
            )
        case EventKind.WATCHER_HEARTBEAT:
            return f"[ALIVE] run-watcher on {event.subject_id}: {d.get('status', 'watching')}"
        case EventKind.INCIDENT_ACKNOWLEDGED:
            return f"[ACKNOWLEDGED] {_incident_line(event)} by {d.get('by')}"
        case EventKind.INCIDENT_UNACKNOWLEDGED:
            return f"[UNACKNOWLEDGED] {_incident_line(event)}: open again"
        case EventKind.INCIDENT_ESCALATED:
            return f"[ESCALATED] {_incident_line(event)}: tier {d.get('tier')}, nobody acknowledged"
        case EventKind.INCIDENT_FLAPPING if event.to_status == "flapping":
            return f"[FLAPPING] {_incident_line(event)}: opened {d.get('opens')} times, held"
        case EventKind.INCIDENT_FLAPPING:
            return f"[SETTLED] {_incident_line(event)}: stopped flapping, still open"


_INCIDENT_KINDS = frozenset(
    {
        EventKind.INCIDENT_ACKNOWLEDGED,
        EventKind.INCIDENT_UNACKNOWLEDGED,
        EventKind.INCIDENT_ESCALATED,
        EventKind.INCIDENT_FLAPPING,
    }
)


def _incident_line(event: Event) -> str:
    """What an incident event is about: the opening event's title, without its tag."""
    cause = event.cause or event
    return default_title(cause).split("] ", 1)[-1]


def transition(event: Event) -> str:
    """``run_abc: EXECUTING → CRASHED``; for a retry, which attempt failed and which runs."""
    if event.kind is EventKind.RUN_RETRYING:
        attempt = event.details.get("attempt")
        if isinstance(attempt, int) and attempt >= 2:
            return (
                f"{event.subject_id}: attempt {attempt - 1} failed, attempt {attempt} "
                f"{'queued' if event.to_status == 'REATTEMPTING' else 'started'} "
                f"({event.from_status} → {event.to_status})"
            )
        return f"{event.subject_id}: an attempt failed and is retried ({event.to_status})"
    if event.kind is EventKind.GROUP_RUNS_FAILED:
        return f"{event.subject_id}: {event.to_status}"
    if event.kind is EventKind.GROUP_COUNTS_CHANGED and (delta := event.details.get("delta")):
        # What moved, not "active → active".
        change = ", ".join(f"{status} {n:+d}" for status, n in delta.items())
        now = counts_text(event.details.get("counts") or {})
        return f"{event.subject_id}: {change} (now {now})"
    return f"{event.subject_id}: {event.from_status or '(new)'} → {event.to_status}"


def event_line(event: Event) -> str:
    """One line per event: subject, transition, error."""
    line = transition(event)
    if error := event.details.get("error"):
        line += f": {clip(str(error), 200)}"
    return line


def _body(event: Event) -> list[str]:
    d = event.details
    lines: list[str] = []
    if event.kind in (EventKind.WATCH_ERROR, EventKind.WATCH_RECOVERED):
        lines.append(f"{event.watch.key}: {event.from_status} → {event.to_status}")
    elif event.kind in (EventKind.STATE_UNAVAILABLE, EventKind.STATE_RECOVERED):
        lines.append(f"State file: {event.subject_id}")
        if d.get("message"):
            lines.append(str(d["message"]))
    elif event.kind in (EventKind.CLUSTER_DEGRADED, EventKind.CLUSTER_RECOVERED):
        if d.get("message"):
            lines.append(str(d["message"]))
        if d.get("error"):
            lines.append(f"Error: {d['error']}")
    elif event.kind is EventKind.WATCHER_HEARTBEAT:
        lines.append(
            f"Alive for {format_duration(float(d.get('uptime_seconds', 0)))}; "
            f"next heartbeat within {format_duration(float(d.get('interval_seconds', 0)))}."
        )
        lines.append("If these stop, the watcher is down: nothing else will tell you.")
    elif event.kind is EventKind.NOTIFIER_FAILED:
        lines.append(
            f"Notifier {event.subject_id} could not deliver {d.get('undeliverable')} notifications."
        )
        lines.append(f"Last error: {clip(str(d.get('error', '')))}")
        if ids := d.get("event_ids"):
            lines.append("Events: " + ", ".join(map(str, ids)))
    elif event.kind in (EventKind.CONDITION_REMINDER, EventKind.CONDITION_RESOLVED):
        cause = event.cause or event
        lines.append(f"Since {d.get('since')}: {default_title(cause)}")
        if event.kind is EventKind.CONDITION_RESOLVED:
            lines.append(f"Now: {d.get('now')}")
        elif (count := d.get("events", 1)) and int(count) > 1:
            lines.append(f"{count} events so far")
    elif event.kind in _INCIDENT_KINDS:
        cause = event.cause or event
        lines.append(f"Since {d.get('since')}: {default_title(cause)}")
        if event.kind is EventKind.INCIDENT_ACKNOWLEDGED and d.get("note"):
            lines.append(f"Note: {clip(str(d['note']))}")
        if event.kind is EventKind.INCIDENT_FLAPPING and d.get("message"):
            lines.append(str(d["message"]))
    else:
        lines.append(transition(event))
    if (error := d.get("error")) and event.kind is not EventKind.NOTIFIER_FAILED:
        lines.append(f"Error: {clip(str(error))}")
    if stack := d.get("error_stack"):
        lines.append("Stack:")
        lines += [f"  {line}" for line in _stack_lines(str(stack))]
    if event.kind is EventKind.WATCH_ERROR:
        lines.append(f"Problem: {clip(str(d.get('message', '')))}")
        lines.append("Notifications for this watch may be late or missing until it recovers.")
    counts = d.get("counts") or d.get("group_counts")
    if counts:
        lines.append(
            f"Runs: {d.get('num_task_runs', sum(counts.values()))} ({counts_text(counts)})"
        )
    if delta := d.get("delta"):
        lines.append("Change: " + ", ".join(f"{k} {v:+d}" for k, v in delta.items()))
    if message := d.get("status_message"):
        lines.append(f"Status: {clip(str(message))}")
    facts = []
    if task := d.get("task"):
        facts.append(f"task {task}")
    if processor := d.get("processor"):
        facts.append(f"processor {processor}")
    if environment := d.get("environment"):
        facts.append(f"env {environment}")
    if version := d.get("version"):
        facts.append(f"version {version}")
    if (attempt := d.get("attempt")) is not None:
        facts.append(f"attempt {attempt}")
    if (ran := d.get("duration_seconds")) is not None:
        facts.append(f"ran {format_duration(float(ran))}")
    if tags := d.get("tags"):
        facts.append("tags " + ", ".join(map(str, tags)))
    if facts:
        lines.append(" · ".join(facts).capitalize())
    lines.append(_watch_line(event))
    if watches := d.get("watches"):
        lines.append(
            "Also watched by: " + ", ".join(str(w.get("name") or w.get("key")) for w in watches[1:])
        )
    if event.url:
        lines.append(event.url)
    if changed := d.get("updated_at") or d.get("modified_at"):
        late = (
            " (seen late: it changed while the watcher was not running)"
            if d.get("seen_late")
            else ""
        )
        lines.append(f"Changed upstream {changed}{late}")
    lines.append(f"Seen {rfc3339(event.observed_at)} · {event.event_id}")
    if (ack := ack_command(event)) is not None:
        lines.append(f"Acknowledge: {ack}")
    if (silence := silence_command(event)) is not None:
        lines.append(f"Silence: {silence}")
    return lines


def ack_command(event: Event) -> str | None:
    """The command that acknowledges the open incident ``event`` belongs to, if any."""
    incident = event.incident
    if incident is None or incident.get("state") != "open":
        return None
    return f"run-watcher ack {incident['id']} --by NAME"


_STACK_LINES = 12


def _stack_lines(stack: str) -> list[str]:
    """The first lines of a stack trace, each clipped, saying how many were left out."""
    lines = [line.rstrip() for line in stack.strip().splitlines() if line.strip()]
    # Indentation kept (frames read as frames); each line cut at 200 characters.
    shown = [line if len(line) <= 200 else line[:199] + "…" for line in lines[:_STACK_LINES]]
    if len(lines) > _STACK_LINES:
        shown.append(f"(+{len(lines) - _STACK_LINES} more lines)")
    return shown


_GROUP_TYPES = frozenset({"parallel_task_group", "trigger_runs"})


def silence_command(event: Event) -> str | None:
    """The command that silences events like this one for an hour, or None for the
    watcher's own notices (silence those by ``kind`` if need be)."""
    origin = event.origin
    if origin.watch.type.value == "watcher":
        return None
    if origin.watch.type.value in _GROUP_TYPES and origin.kind is not EventKind.RUN_STATUS_CHANGED:
        target = f"watch.id={origin.watch.id}"
    else:
        target = f"subject_id={origin.subject_id}"
    return f"run-watcher silence add --match {target} --match kind={origin.kind.value} --for 1h"


def _watch_line(event: Event) -> str:
    line = f"Watch: {event.watch.display_name} ({event.watch.type.value} {event.watch.id})"
    if event.watch.labels:
        line += " · " + ", ".join(f"{k}={v}" for k, v in sorted(event.watch.labels.items()))
    return line


def digest_title(events: Sequence[Event]) -> str:
    """The title of a message about several events (of one group, or folded from many)."""
    first, last = events[0], events[-1]
    n = len(events)
    name = first.watch.display_name
    if (folded := _watch_problems_title(events)) is not None:
        return folded
    if len({(e.watch.key, e.kind) for e in events}) > 1:
        kinds: dict[str, int] = {}
        for event in events:
            kinds[event.kind.value] = kinds.get(event.kind.value, 0) + 1
        summary = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        watches = len({e.watch.key for e in events})
        where = name if watches == 1 else f"{watches} watches"
        return clip(
            f"[{worst_severity(events).value.upper()}] {n} events in {where}: {summary}", 250
        )
    subjects = list(dict.fromkeys(e.subject_id for e in events))
    if first.kind is EventKind.GROUP_RUNS_FAILED:
        shown = ", ".join(subjects[:_TITLE_IDS])
        more = f" (+{len(subjects) - _TITLE_IDS} more)" if len(subjects) > _TITLE_IDS else ""
        return clip(f"[FAILED] {n} runs failed in {name}: {shown}{more}", 250)
    if first.kind is EventKind.RUN_STATUS_CHANGED:
        if len(subjects) == 1:
            steps = [events[0].from_status or "(new)"]
            for before, after in itertools.pairwise(events):
                if after.from_status != before.to_status:
                    steps.append(f"{before.to_status} … {after.from_status}")
                else:
                    steps.append(before.to_status)
            steps.append(last.to_status)
            return clip(f"[{last.to_status.upper()}] {_run_name(last)} ({' → '.join(steps)})", 250)
        statuses = "/".join(sorted({e.to_status.upper() for e in events}))
        return clip(f"[{statuses}] {len(subjects)} runs changed in {name}", 250)
    return clip(f"{default_title(last)} (+{n - 1} earlier)", 250)


_SOURCE_NAMES = {"parallel": "Parallel", "trigger": "Trigger.dev", "watcher": "run-watcher"}


def _watch_problems_title(events: Sequence[Event]) -> str | None:
    """One title for the watches of a provider that lost (or regained) sight of it at
    once: ``[WATCH UNREACHABLE] Trigger.dev: 4 watches cannot see upstream: a, b, c, d``."""
    kinds = {e.kind for e in events}
    watches = list(dict.fromkeys(e.watch.display_name for e in events))
    if len(watches) < 2 or len(kinds) != 1:
        return None
    (kind,) = kinds
    source = _SOURCE_NAMES.get(events[0].source.value, events[0].source.value)
    shown = ", ".join(watches[:_TITLE_IDS])
    more = f" (+{len(watches) - _TITLE_IDS} more)" if len(watches) > _TITLE_IDS else ""
    if kind is EventKind.WATCH_ERROR:
        problems = "/".join(sorted({e.to_status.upper() for e in events}))
        return clip(
            f"[WATCH {problems}] {source}: {len(watches)} watches cannot see upstream: "
            f"{shown}{more}",
            250,
        )
    if kind is EventKind.WATCH_RECOVERED:
        return clip(
            f"[RECOVERED] {source}: {len(watches)} watches watching again: {shown}{more}", 250
        )
    return None


def render_text(events: Sequence[Event]) -> Message:
    """One message for one event, or a digest for several of the same group."""
    if not events:
        raise ValueError("render_text needs at least one event")
    first = events[0]
    if len(events) == 1:
        return Message(clip(default_title(first), 250), "\n".join(_body(first)), first.severity)
    mixed = len({e.watch.key for e in events}) > 1
    lines = [
        f"- {e.watch.display_name + ' ' if mixed else ''}{event_line(e)}"
        for e in events[:MAX_LISTED]
    ]
    if len(events) > MAX_LISTED:
        lines.append(f"(+{len(events) - MAX_LISTED} more)")
    latest = events[-1].details
    counts = latest.get("counts") or latest.get("group_counts")
    if counts:
        lines.append(f"Runs now: {counts_text(counts)}")
    lines.append(_watch_line(first))
    lines.append(f"Seen {rfc3339(events[0].observed_at)} to {rfc3339(events[-1].observed_at)}")
    if (ack := ack_command(events[-1])) is not None:
        lines.append(f"Acknowledge: {ack}")
    return Message(digest_title(events), "\n".join(lines), worst_severity(events))


def render_json(events: Sequence[Event]) -> Message:
    """``format: json``: the body is the event itself, or ``{"digest": true, "events": [...]}``."""
    first = events[0]
    if len(events) == 1:
        body = event_to_json(first)
        title = f"{first.kind.value} {first.subject_id}"
    else:
        body = events_to_json(events)
        kinds: dict[str, int] = {}
        for event in events:
            kinds[event.kind.value] = kinds.get(event.kind.value, 0) + 1
        if len(kinds) == 1:
            title = f"digest of {len(events)} {first.kind.value} events"
        else:
            held = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
            title = f"digest of {len(events)} events: {held}"
    return Message(title=title, body=body, severity=worst_severity(events), body_format="text")
