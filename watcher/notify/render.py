"""Plain-text messages for people: a short title, a body with what to act on. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watcher.core.events import Event, EventKind, WatchType
from watcher.core.statuses import Severity
from watcher.notify.serialize import event_to_json, rfc3339

__all__ = ["Message", "render_json", "render_text"]

_MAX_LISTED = 20
_MAX_ERROR = 500


@dataclass(frozen=True, slots=True)
class Message:
    """What a notifier sends: title, body, apprise notify type, body format."""

    title: str
    body: str
    severity: Severity
    body_format: str = "text"


def _counts(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v) or "no runs"


def _clip(text: str, limit: int = _MAX_ERROR) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _who(event: Event) -> str:
    """The name a human knows the subject by."""
    task = event.details.get("task")
    if event.watch.type in (WatchType.TRIGGER_RUN, WatchType.TRIGGER_RUNS) and task:
        return str(task)
    return event.watch.display_name


def _title(event: Event) -> str:
    name = event.watch.display_name
    d = event.details
    match event.kind:
        case EventKind.RUN_STATUS_CHANGED:
            who = _who(event)
            suffix = "" if who == event.subject_id else f" {event.subject_id}"
            return f"[{event.to_status.upper()}] {who}{suffix}"
        case EventKind.GROUP_RUNS_FAILED:
            return f"[FAILED] run {event.subject_id} failed in {name}"
        case EventKind.GROUP_FINISHED:
            return f"[FINISHED] {name}: {_counts(d.get('counts', {}))}"
        case EventKind.GROUP_REACTIVATED:
            return f"[ACTIVE] {name} is running again ({d.get('num_task_runs')} runs)"
        case EventKind.GROUP_RUNS_ADDED:
            return f"[RUNS ADDED] {name}: +{d.get('added')} ({d.get('num_task_runs')} in all)"
        case EventKind.GROUP_COUNTS_CHANGED:
            return f"[PROGRESS] {name}: {_counts(d.get('counts', {}))}"
        case EventKind.WATCH_ERROR:
            return f"[WATCH {event.to_status.upper()}] {name}: cannot see upstream"
        case EventKind.WATCH_RECOVERED:
            return f"[RECOVERED] {name}: watching again"


def _body(event: Event) -> list[str]:
    d = event.details
    lines: list[str] = []
    if event.kind in (EventKind.RUN_STATUS_CHANGED, EventKind.GROUP_RUNS_FAILED):
        before = event.from_status or "(new)"
        lines.append(f"{event.subject_id}: {before} → {event.to_status}")
    elif event.kind in (EventKind.WATCH_ERROR, EventKind.WATCH_RECOVERED):
        lines.append(f"{event.watch.key}: {event.from_status} → {event.to_status}")
    else:
        lines.append(
            f"{event.subject_id}: {event.from_status or '(first look)'} → {event.to_status}"
        )
    if error := d.get("error"):
        lines.append(f"Error: {_clip(str(error))}")
    if event.kind == EventKind.WATCH_ERROR:
        lines.append(f"Problem: {_clip(str(d.get('message', '')))}")
        lines.append("Notifications for this watch may be late or missing until it recovers.")
    if event.kind in (
        EventKind.GROUP_COUNTS_CHANGED,
        EventKind.GROUP_FINISHED,
        EventKind.GROUP_REACTIVATED,
    ):
        lines.append(f"Runs: {d.get('num_task_runs')} ({_counts(d.get('counts', {}))})")
        if delta := d.get("delta"):
            lines.append("Change: " + ", ".join(f"{k} {v:+d}" for k, v in delta.items()))
        if message := d.get("status_message"):
            lines.append(f"Status: {_clip(str(message))}")
    facts = []
    if task := d.get("task"):
        facts.append(f"task {task}")
    if processor := d.get("processor"):
        facts.append(f"processor {processor}")
    if (attempt := d.get("attempt")) is not None:
        facts.append(f"attempt {attempt}")
    if tags := d.get("tags"):
        facts.append("tags " + ", ".join(map(str, tags)))
    if facts:
        lines.append(" · ".join(facts).capitalize())
    watch = f"Watch: {event.watch.display_name} ({event.watch.type.value} {event.watch.id})"
    if event.watch.labels:
        watch += " · " + ", ".join(f"{k}={v}" for k, v in sorted(event.watch.labels.items()))
    lines.append(watch)
    if event.url:
        lines.append(event.url)
    lines.append(f"Seen {rfc3339(event.observed_at)} · {event.event_id}")
    return lines


def _worst(events: Sequence[Event]) -> Severity:
    order = list(Severity)
    return min((e.severity for e in events), key=order.index)


def render_text(events: Sequence[Event]) -> Message:
    """One message for one event, or a digest for several of the same watch and kind."""
    if not events:
        raise ValueError("render_text needs at least one event")
    first = events[0]
    if len(events) == 1:
        return Message(_title(first), "\n".join(_body(first)), first.severity)
    name = first.watch.display_name
    n = len(events)
    match first.kind:
        case EventKind.GROUP_RUNS_FAILED:
            title = f"[FAILED] {n} runs failed in {name}"
        case EventKind.RUN_STATUS_CHANGED:
            statuses = sorted({e.to_status for e in events})
            title = f"[{'/'.join(s.upper() for s in statuses)}] {n} runs changed in {name}"
        case _:
            title = f"{_title(events[-1])} (+{n - 1} earlier)"
    lines = []
    for event in events[:_MAX_LISTED]:
        line = f"- {event.subject_id}: {event.from_status or '(new)'} → {event.to_status}"
        if error := event.details.get("error"):
            line += f": {_clip(str(error), 200)}"
        lines.append(line)
    if n > _MAX_LISTED:
        lines.append(f"(+{n - _MAX_LISTED} more)")
    lines.append(f"Watch: {name} ({first.watch.type.value} {first.watch.id})")
    lines.append(f"Seen {rfc3339(events[0].observed_at)} to {rfc3339(events[-1].observed_at)}")
    return Message(title, "\n".join(lines), _worst(events))


def render_json(event: Event) -> Message:
    """``format: json``: the body is the event itself."""
    return Message(
        title=f"{event.kind.value} {event.subject_id}",
        body=event_to_json(event),
        severity=event.severity,
        body_format="text",
    )
