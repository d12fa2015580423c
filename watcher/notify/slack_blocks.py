"""Block Kit for an incident's Slack message and its thread replies. Pure.

One message per incident, edited as it goes: its header says where it stands
(``FAILING``, ``ACKNOWLEDGED by ana``, ``RESOLVED after 14m``), its body what is wrong
and how to act. Later events of the incident are thread replies. Everything stays
within Slack's limits: a header's 150 characters, a section's 3,000, 50 blocks a
message, and a ``text`` fallback (notifications and screen readers use it) of 4,000.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from watcher.core.durations import format_duration
from watcher.core.events import Event, EventKind
from watcher.notify.render import clip, default_title, transition

__all__ = [
    "HEADER_MAX",
    "MAX_BLOCKS",
    "SECTION_MAX",
    "TEXT_MAX",
    "incident_blocks",
    "opened_facts",
    "reply_text",
    "state_line",
]

HEADER_MAX = 150
SECTION_MAX = 3000
MAX_BLOCKS = 50
TEXT_MAX = 4000
_ICON = {
    "open": ":red_circle:",
    "acknowledged": ":large_yellow_circle:",
    "resolved": ":white_check_mark:",
}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def state_line(incident: Mapping[str, Any]) -> str:
    """``FAILING``, ``ACKNOWLEDGED by ana``, ``RESOLVED after 14m``."""
    state = str(incident.get("state"))
    if state == "resolved":
        took = incident.get("duration_seconds")
        return "RESOLVED" + (f" after {format_duration(float(took))}" if took is not None else "")
    if state == "acknowledged":
        ack = incident.get("acknowledged") or {}
        return f"ACKNOWLEDGED by {ack.get('by', '?')}"
    escalated = len(incident.get("escalated") or ())
    return "FAILING" + (f", escalated (tier {escalated})" if escalated else "")


def opened_facts(event: Event) -> dict[str, Any]:
    """What the incident message shows of the event that opened it (kept with the
    message's ``ts``: later events, even the one that ends it, edit the same text)."""
    opened = event.cause if event.cause is not None else event
    error = opened.details.get("error") or opened.details.get("error_message")
    return {
        "title": default_title(opened),
        "watch": opened.watch.key,
        "subject": opened.subject_id,
        "error": clip(str(error), 800) if error is not None else None,
        "url": opened.url,
    }


def incident_blocks(
    incident: Mapping[str, Any], opened: Mapping[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    """The incident message's fallback text and blocks, from its view and
    :func:`opened_facts`."""
    state = state_line(incident)
    icon = _ICON.get(str(incident.get("state")), ":grey_question:")
    title = str(opened.get("title") or incident.get("summary"))
    header = _cut(f"{state}: {title}", HEADER_MAX)
    lines = [f"*{clip(str(incident.get('summary') or title), 500)}*"]
    lines.append(f"Watch: `{opened.get('watch')}`")
    lines.append(f"Since: {incident.get('opened_at')} ({incident.get('events', 1)} events)")
    if opened.get("error"):
        lines.append(f"Error: {opened['error']}")
    ack = incident.get("acknowledged")
    if ack:
        note = f": {clip(str(ack['note']), 300)}" if ack.get("note") else ""
        lines.append(f"Acknowledged by *{ack.get('by')}* at {ack.get('at')}{note}")
    if opened.get("url"):
        lines.append(f"<{opened['url']}|Open {opened.get('subject')}>")
    context = f"{icon} Incident `{incident.get('id')}`"
    if incident.get("state") == "open":
        context += f" · acknowledge: `run-watcher ack {incident.get('id')} --by NAME`"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut("\n".join(lines), SECTION_MAX)},
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, SECTION_MAX)}]},
    ]
    text = _cut(f"{state}: {title}", TEXT_MAX)
    return text, blocks[:MAX_BLOCKS]


def reply_text(event: Event) -> str:
    """A thread reply telling one later event of the incident."""
    d = event.details
    match event.kind:
        case EventKind.INCIDENT_ACKNOWLEDGED:
            text = f"Acknowledged by *{d.get('by')}*" + (
                f": {d.get('note')}" if d.get("note") else ""
            )
        case EventKind.INCIDENT_UNACKNOWLEDGED:
            text = "Acknowledgement taken back: open again (reminders and escalation resume)"
        case EventKind.INCIDENT_ESCALATED:
            text = f"Escalated to tier {d.get('tier')} ({', '.join(d.get('notify') or ())}): nobody acknowledged"
        case EventKind.CONDITION_REMINDER:
            text = f"Still open after {format_duration(float(d.get('open_seconds', 0)))} (reminder {d.get('reminder')})"
        case EventKind.CONDITION_RESOLVED:
            took = format_duration(float(d.get("duration_seconds", 0)))
            text = f"Resolved after {took}: now {d.get('now')}"
        case _:
            text = f"{default_title(event)}\n{transition(event)}"
            if (error := d.get("error")) is not None:
                text += f"\nError: {clip(str(error), 800)}"
    return _cut(text, TEXT_MAX)
