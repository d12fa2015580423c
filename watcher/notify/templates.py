"""Message templates: Jinja2 in an immutable sandbox, with built-in defaults per service family.

Families come from what each apprise service declares about itself: ``email``
(HTML first), ``chat`` (speaks Markdown: Slack, Discord, Matrix, Telegram ...),
``sms`` (no title or a short body: Twilio, SNS, PagerDuty ...) and ``text``
(the rest, and generic webhooks). A user template may be set per notifier or per
route; it is checked when the config is loaded (syntax, and a trial render of
every kind of event), and at run time a template that fails falls back to the
default message: the event is never dropped.

Templates see a view of the events (their documented JSON shape), never upstream
payloads or outputs, and their output is capped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

import structlog
from jinja2 import TemplateError, TemplateSyntaxError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from watcher.core.durations import format_duration
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.routing import BodyFormat
from watcher.core.statuses import Severity, Source
from watcher.notify.render import (
    MAX_LISTED,
    Message,
    ack_command,
    counts_text,
    render_json,
    render_text,
    silence_command,
    worst_severity,
)
from watcher.notify.serialize import event_to_dict

__all__ = [
    "Family",
    "MessageRenderer",
    "TemplateProblem",
    "TemplateSpec",
    "check_template",
    "template_context",
]

log = structlog.get_logger("watcher.notify")

Family = Literal["email", "chat", "sms", "text"]

MAX_TITLE = 250
MAX_BODY = 32 * 1024
_MAX_TEMPLATE_EVENTS = 500
_COLORS = {"failure": "#c62828", "warning": "#ef6c00", "success": "#2e7d32", "info": "#1565c0"}


class TemplateProblem(ValueError):
    """A template that cannot be used; the message names the template line."""


@dataclass(frozen=True, slots=True)
class TemplateSpec:
    """User templates of a notifier or a route (``None``: not set here)."""

    title: str | None = None
    body: str | None = None
    body_format: BodyFormat | None = None

    def over(self, base: TemplateSpec) -> TemplateSpec:
        """This spec with ``base`` filling what it leaves unset."""
        return TemplateSpec(
            self.title if self.title is not None else base.title,
            self.body if self.body is not None else base.body,
            self.body_format if self.body_format is not None else base.body_format,
        )


def _environment(html: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        autoescape=html, undefined=Undefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["duration"] = lambda seconds: format_duration(float(seconds or 0))
    env.filters["counts"] = counts_text
    return env


_ENVS = {False: _environment(False), True: _environment(True)}


@functools.lru_cache(maxsize=256)
def _compile(source: str, html: bool) -> Any:
    try:
        return _ENVS[html].from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template line {exc.lineno}: {exc.message}") from None


def _template_line(tb: TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render(source: str, html: bool, context: dict[str, Any], limit: int) -> str:
    """Render with the output capped at ``limit`` characters (streamed, so a runaway
    loop stops early)."""
    template = _compile(source, html)
    parts: list[str] = []
    size = 0
    try:
        for chunk in template.generate(**context):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        line = _template_line(exc.__traceback__)
        where = f"template line {line}" if line else "template"
        raise TemplateProblem(f"{where}: {type(exc).__name__}: {exc}") from None
    text = "".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def template_context(events: Sequence[Event]) -> dict[str, Any]:
    """What a template sees: the events in their JSON shape and a few conveniences."""
    default = render_text(events)
    shown = [event_to_dict(e) for e in events[:_MAX_TEMPLATE_EVENTS]]
    last = shown[-1] if len(events) <= _MAX_TEMPLATE_EVENTS else event_to_dict(events[-1])
    group = None
    for event in reversed(events):
        counts = event.details.get("counts") or event.details.get("group_counts")
        if counts:
            group = {
                "counts": dict(counts),
                "num_task_runs": event.details.get("num_task_runs", sum(counts.values())),
                "counts_text": counts_text(counts),
            }
            break
    severity = worst_severity(events).value
    return {
        "title": default.title,
        "text": default.body,
        "events": shown,
        "event": last,
        "first": shown[0],
        "listed": shown[:MAX_LISTED],
        "count": len(events),
        "more": max(0, len(events) - MAX_LISTED),
        "digest": len(events) > 1,
        "severity": severity,
        "color": _COLORS[severity],
        "kind": events[0].kind.value,
        "watch": shown[0]["watch"],
        "group": group,
        "silence": silence_command(events[-1]),
        "ack": ack_command(events[-1]),
    }


_CHAT_BODY = """\
{% for e in listed %}
• `{{ e.subject_id }}` {{ e.from_status or "new" }} → *{{ e.to_status }}*{% if e.details.error %}: {{ e.details.error | truncate(200) }}{% endif %}{% if e.url %} ([open]({{ e.url }})){% endif %}

{% endfor %}
{% if more %}…and {{ more }} more
{% endif %}
{% if event.details.message %}*Problem:* {{ event.details.message | truncate(300) }}
{% endif %}
{% if group %}*Runs:* {{ group.num_task_runs }} ({{ group.counts_text }})
{% endif %}
{% if not digest %}{% set d = event.details %}{% if d.task or d.environment or d.version %}{% if d.task %}Task `{{ d.task }}`{% endif %}{% if d.environment %} · env {{ d.environment }}{% endif %}{% if d.version %} · version {{ d.version }}{% endif %}{% if d.attempt is not none %} · attempt {{ d.attempt }}{% endif %}{% if d.duration_seconds is not none %} · ran {{ d.duration_seconds | duration }}{% endif %}

{% endif %}{% if d.error_stack %}```
{{ d.error_stack | truncate(1500) }}
```
{% endif %}{% if d.updated_at or d.modified_at %}Changed upstream {{ d.updated_at or d.modified_at }}{% if d.seen_late %} (seen late){% endif %}

{% endif %}{% endif %}
_{{ watch.name or watch.id }}_ · {{ watch.type }}{% for k, v in watch.labels | dictsort %} · {{ k }}={{ v }}{% endfor %}

{% if ack %}Acknowledge: `{{ ack }}`
{% endif %}{% if silence %}Silence: `{{ silence }}`{% endif %}
"""

_EMAIL_BODY = """\
<div style="font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;color:#222">
<h2 style="margin:0 0 12px;color:{{ color }}">{{ title }}</h2>
<table cellpadding="6" cellspacing="0" style="border-collapse:collapse;border:1px solid #ddd">
<tr style="background:#f5f5f5"><th align="left">Subject</th><th align="left">Change</th><th align="left">Details</th></tr>
{% for e in listed %}
<tr><td><code>{% if e.url %}<a href="{{ e.url }}">{{ e.subject_id }}</a>{% else %}{{ e.subject_id }}{% endif %}</code></td><td>{{ e.from_status or "new" }} &rarr; <b>{{ e.to_status }}</b></td><td>{{ e.details.error or e.details.message or "" }}</td></tr>
{% endfor %}
</table>
{% if more %}<p>&hellip;and {{ more }} more.</p>{% endif %}
{% if group %}
<h3 style="margin:16px 0 8px">Runs in the group: {{ group.num_task_runs }}</h3>
<table cellpadding="6" cellspacing="0" style="border-collapse:collapse;border:1px solid #ddd">
<tr style="background:#f5f5f5"><th align="left">Status</th><th align="right">Runs</th></tr>
{% for status, n in group.counts | dictsort %}
<tr><td>{{ status }}</td><td align="right">{{ n }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% if not digest %}{% set d = event.details %}
{% if d.task or d.environment or d.version %}<p>{% if d.task %}Task <b>{{ d.task }}</b>{% endif %}{% if d.environment %} &middot; env <b>{{ d.environment }}</b>{% endif %}{% if d.version %} &middot; version {{ d.version }}{% endif %}{% if d.attempt is not none %} &middot; attempt {{ d.attempt }}{% endif %}{% if d.duration_seconds is not none %} &middot; ran {{ d.duration_seconds | duration }}{% endif %}</p>{% endif %}
{% if d.error_stack %}<pre style="background:#f8f8f8;border:1px solid #eee;padding:8px;font-size:12px;white-space:pre-wrap">{{ d.error_stack | truncate(4000) }}</pre>{% endif %}
{% if d.updated_at or d.modified_at %}<p>Changed upstream {{ d.updated_at or d.modified_at }}{% if d.seen_late %} <b>(seen late: it changed while the watcher was not running)</b>{% endif %}</p>{% endif %}
{% endif %}
{% if ack %}<p style="font-size:12px">Acknowledge it: <code>{{ ack }}</code></p>{% endif %}
{% if silence %}<p style="font-size:12px">Silence it for an hour: <code>{{ silence }}</code></p>{% endif %}
<p style="color:#666;font-size:12px;margin-top:16px">Watch <b>{{ watch.name or watch.id }}</b> ({{ watch.type }} {{ watch.id }}){% for k, v in watch.labels | dictsort %} &middot; {{ k }}={{ v }}{% endfor %}<br>
Seen {{ event.observed_at }} &middot; {{ event.event_id }}{% if count > 1 %} &middot; {{ count }} events{% endif %}</p>
</div>
"""

_SMS_BODY = """{{ title }}{% if event.details.error %}: {{ event.details.error }}{% endif %}"""

_BUILTIN: dict[Family, TemplateSpec] = {
    "chat": TemplateSpec("{{ title }}", _CHAT_BODY, "markdown"),
    "email": TemplateSpec("{{ title }}", _EMAIL_BODY, "html"),
    "sms": TemplateSpec("", _SMS_BODY, "text"),
}


def _fit_note(left_out: int, limit: int, *, cut: bool = False) -> str:
    """What a message fitted to ``limit`` says about what it left out ("" if nothing)."""
    parts = []
    if left_out:
        parts.append(f"+{left_out} more events not shown")
    if cut:
        parts.append("cut to fit")
    if not parts:
        return ""
    return f"\n({'; '.join(parts)}: this service takes {limit} characters a message)"


class MessageRenderer:
    """Renders batches for one notifier: JSON, a user template, or the family default."""

    def __init__(
        self,
        *,
        family: Family = "text",
        fmt: Literal["text", "json"] = "text",
        spec: TemplateSpec | None = None,
        max_title: int = MAX_TITLE,
        max_body: int = MAX_BODY,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.family = family
        self.fmt = fmt
        self.spec = spec or TemplateSpec()
        self.max_title = max_title
        self.max_body = max_body
        self.template_errors = 0
        self._on_error = on_error

    def render(self, events: Sequence[Event], route: TemplateSpec | None = None) -> Message:
        """The message for ``events``, fitted to the service's body limit: a digest lists
        fewer events and says how many it left out; one event is cut and says so.

        A failing user template falls back to the default message.
        """
        if self.fmt == "json":
            return render_json(events)
        message = self._render(events, route)
        shown = len(events)
        limit = self.max_body
        while shown > 1 and len(message.body) + len(_fit_note(len(events) - shown, limit)) > limit:
            # Each step drops about the share of events the overflow stands for.
            ratio = limit / (len(message.body) + len(_fit_note(len(events), limit)))
            shown = max(1, min(shown - 1, int(shown * ratio)))
            message = self._render(events[:shown], route)
        left_out = len(events) - shown
        note = _fit_note(left_out, limit)
        if len(message.body) + len(note) > limit:
            note = _fit_note(left_out, limit, cut=True)
            keep = max(0, limit - len(note) - 1)
            message = replace(message, body=message.body[:keep] + "…")
        if note:
            message = replace(message, body=f"{message.body}{note}")
        return message

    def _render(self, events: Sequence[Event], route: TemplateSpec | None) -> Message:
        spec = (route or TemplateSpec()).over(self.spec)
        if spec.title is not None or spec.body is not None:
            try:
                return self._with(spec.over(self._builtin()), events)
            except TemplateProblem as exc:
                self.template_errors += 1
                log.error(
                    "template failed; sending the default message",
                    error=str(exc),
                    event_ids=[e.event_id for e in events[:20]],
                )
                if self._on_error is not None:
                    self._on_error(str(exc))
        return self.default(events)

    def _builtin(self) -> TemplateSpec:
        return _BUILTIN.get(self.family, TemplateSpec())

    def default(self, events: Sequence[Event]) -> Message:
        """The built-in message of this notifier's family (plain text if that fails)."""
        builtin = self._builtin()
        if builtin.body is not None:
            try:
                return self._with(builtin, events)
            except TemplateProblem as exc:  # pragma: no cover - the built-ins are tested
                log.error("built-in template failed; sending plain text", error=str(exc))
        return render_text(events)

    def _with(self, spec: TemplateSpec, events: Sequence[Event]) -> Message:
        fmt = spec.body_format or "text"
        context = template_context(events)
        plain = render_text(events)
        title = (
            plain.title
            if spec.title is None
            else _render(spec.title, False, context, self.max_title)
        )
        # Rendered up to a runaway cap above the service's limit: render() then fits the
        # message by listing fewer events, and says so, instead of cutting it silently.
        body = (
            plain.body
            if spec.body is None
            else _render(spec.body, fmt == "html", context, max(MAX_BODY, 2 * self.max_body))
        )
        return Message(" ".join(title.split())[: self.max_title], body.strip(), plain.severity, fmt)


def _samples() -> list[list[Event]]:
    """Events of every kind, for trial renders when a config is loaded."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    watch = WatchRef(
        WatchType.PARALLEL_TASK_GROUP, "tgrp_sample", "sample", freeze({"team": "sample"})
    )
    details = freeze(
        {
            "error": "sample error",
            "counts": {"completed": 2, "failed": 1},
            "num_task_runs": 3,
            "message": "sample",
        }
    )
    base = Event(
        "evt_sample",
        EventKind.GROUP_RUNS_FAILED,
        Severity.FAILURE,
        Source.PARALLEL,
        watch,
        "trun_sample",
        None,
        "failed",
        now,
        details,
    )
    out: list[list[Event]] = []
    for kind in EventKind:
        event = Event(
            f"evt_{kind.value}",
            kind,
            Severity.WARNING,
            Source.PARALLEL,
            watch,
            "subject",
            "running",
            "failed",
            now,
            details,
            cause=base,
        )
        out.append([event])
    out.append([base, base])
    return out


def check_template(source: str, *, html: bool = False) -> None:
    """Raise :class:`TemplateProblem` if ``source`` does not compile or fails a trial render."""
    _compile(source, html)
    for events in _samples():
        _render(source, html, template_context(events), MAX_BODY)
