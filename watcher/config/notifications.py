"""The ``notifiers``, ``notifications``, ``routes`` and ``silences`` sections."""

from __future__ import annotations

import os
import re
from datetime import datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from watcher.config.base import Duration, Strict
from watcher.config.native_notifiers import NativeNotifier, PagerDutyConfig, SlackBotConfig
from watcher.core.events import EventKind, WatchType
from watcher.core.flapping import FlapPolicy
from watcher.core.incidents import Tier
from watcher.core.routing import (
    MATCH_FIELDS,
    BodyFormat,
    Matcher,
    RouteNode,
    RouteSettings,
    parse_matcher,
)
from watcher.core.silences import Silence, Window
from watcher.core.statuses import Severity, Source
from watcher.notify.templates import TemplateProblem, check_template

__all__ = [
    "GROUP_BY_FIELDS",
    "FlappingConfig",
    "MatchSpec",
    "NotificationsConfig",
    "NotifierConfig",
    "RouteConfig",
    "SilenceConfig",
    "TierConfig",
    "build_routes",
    "to_matchers",
    "validate_match",
]

MatchSpec = dict[str, str | list[str] | dict[str, str | list[str]]]

_ENUM_VALUES: dict[str, frozenset[str]] = {
    "source": frozenset(s.value for s in Source),
    "kind": frozenset(k.value for k in EventKind),
    "severity": frozenset(s.value for s in Severity),
    "watch.type": frozenset(t.value for t in WatchType),
}

GROUP_BY_FIELDS = MATCH_FIELDS | {"watch"}
"""``group_by`` fields: the match fields, ``watch`` (the watch's key) and ``labels.<x>``."""


def _plain_value(value: str) -> str | None:
    """The literal a matcher value compares with, or None for a regular expression."""
    body = value[1:] if value.startswith("!") else value
    return None if body.startswith("~") else body


def validate_match(match: dict[str, Any]) -> dict[str, Any]:
    """Check field names, enumerated values and regular expressions of a match."""
    for key, value in match.items():
        if key == "labels":
            if not isinstance(value, dict):
                raise ValueError("labels: expected a mapping of label name to value(s)")
            for label, accepted in value.items():
                _check_values(f"labels.{label}", accepted)
            continue
        if isinstance(value, dict):
            raise ValueError(f"{key}: expected a value or a list of values")
        if key not in MATCH_FIELDS and not key.startswith("labels."):
            raise ValueError(
                f"unknown match field {key!r}; use one of {', '.join(sorted(MATCH_FIELDS))} "
                "or labels.<name>"
            )
        _check_values(key, value)
    return match


def _check_values(key: str, value: str | list[str]) -> None:
    values = [value] if isinstance(value, str) else value
    try:
        parse_matcher(values)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    allowed = _ENUM_VALUES.get(key)
    if allowed is not None:
        bad = [v for v in values if (p := _plain_value(v)) is not None and p not in allowed]
        if bad:
            raise ValueError(
                f"{key}: unknown value {', '.join(map(repr, bad))}; use {', '.join(sorted(allowed))}"
            )


def to_matchers(match: MatchSpec) -> dict[str, Matcher]:
    """The match as field -> matcher, ``labels: {x: ...}`` flattened to ``labels.x``."""
    out: dict[str, Matcher] = {}
    for key, value in match.items():
        if isinstance(value, dict):
            for label, accepted in value.items():
                out[f"labels.{label}"] = parse_matcher(accepted)
        else:
            out[key] = parse_matcher(value)
    return out


def _check_templates(title: str | None, body: str | None, body_format: str | None) -> None:
    try:
        if title is not None:
            check_template(title)
    except TemplateProblem as exc:
        raise ValueError(f"title_template: {exc}") from None
    try:
        if body is not None:
            check_template(body, html=body_format == "html")
    except TemplateProblem as exc:
        raise ValueError(f"body_template: {exc}") from None


_SENDERS = ("url", "url_env", "url_file", "pagerduty", "slack")


class NotifierConfig(Strict):
    """An apprise URL (or a ``pagerduty:`` or ``slack:`` section) with tags, its message
    format, templates and rate limit."""

    url: SecretStr | None = None
    url_env: str | None = None
    url_file: Path | None = None
    pagerduty: PagerDutyConfig | None = None
    slack: SlackBotConfig | None = None
    tags: list[str] = Field(default_factory=list)
    format: Literal["text", "json"] = "text"
    name: str | None = None
    title_template: str | None = None
    body_template: str | None = None
    body_format: BodyFormat | None = None
    max_per_minute: float = Field(default=30.0, gt=0)
    burst: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _valid(self) -> NotifierConfig:
        given = [k for k in _SENDERS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_SENDERS)}")
        if self.format == "json" and (self.title_template or self.body_template):
            raise ValueError("templates do not apply to format: json (the body is the event)")
        _check_templates(self.title_template, self.body_template, self.body_format)
        return self

    def native(self) -> NativeNotifier | None:
        """The ``pagerduty:`` or ``slack:`` section, if this is not an apprise URL."""
        return self.pagerduty or self.slack

    def resolve_url(self) -> str:
        """The apprise URL itself (a secret: never log it)."""
        if self.url is not None:
            return self.url.get_secret_value()
        if self.url_env is not None:
            value = os.environ.get(self.url_env)
            if not value:
                raise ValueError(f"environment variable {self.url_env} is not set")
            return value.strip()
        assert self.url_file is not None
        try:
            return self.url_file.read_text().strip()
        except OSError as exc:
            raise ValueError(
                f"cannot read url_file {str(self.url_file)!r}: {exc.strerror}"
            ) from None


def _check_group_by(fields: list[str] | None) -> list[str] | None:
    if fields is not None:
        bad = [f for f in fields if f not in GROUP_BY_FIELDS and not f.startswith("labels.")]
        if bad:
            raise ValueError(
                f"unknown group_by field {', '.join(map(repr, bad))}; use "
                f"{', '.join(sorted(GROUP_BY_FIELDS))} or labels.<name>"
            )
    return fields


class FlappingConfig(Strict):
    """A condition that opens more than ``opens`` times within ``window`` is flapping: one
    message says so, and its opening and resolved messages wait until it has stayed put
    for ``quiet``."""

    enabled: bool = True
    opens: int = Field(default=3, ge=1)
    window: Duration = 3600.0
    quiet: Duration = 1800.0

    def policy(self) -> FlapPolicy | None:
        """The core policy; None when turned off."""
        return FlapPolicy(self.opens, self.window, self.quiet) if self.enabled else None


class TierConfig(Strict):
    """An escalation tier: an incident open and unacknowledged for ``after`` goes to
    ``notifiers`` (names or tags), once."""

    after: Duration
    notifiers: list[str] = Field(min_length=1)


class NotificationsConfig(Strict):
    """Defaults of every route: grouping, reminders, resolved messages, flapping."""

    group_by: list[str] = Field(default_factory=lambda: ["watch", "kind"])
    group_wait: Duration = 1.0
    group_interval: Duration = 10.0
    repeat_interval: Duration | None = None
    send_resolved: bool = False
    flapping: FlappingConfig = Field(default_factory=FlappingConfig)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str]) -> list[str] | None:
        return _check_group_by(value)


class RouteConfig(Strict):
    """A route: ``match``, the tags to ``notify``, settings, and child ``routes``.

    Unset settings are inherited from the parent route (or ``notifications``).
    ``repeat_interval: 0`` turns reminders off below a route that has them.
    """

    match: MatchSpec = Field(default_factory=dict)
    notify: list[str] | None = None
    continue_: bool = Field(default=False, alias="continue")
    routes: list[RouteConfig] | None = None
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    send_resolved: bool | None = None
    title_template: str | None = None
    body_template: str | None = None
    body_format: BodyFormat | None = None
    escalate: list[TierConfig] | None = None
    """Escalation tiers of the incidents this route takes (inherited by child routes)."""

    @field_validator("match")
    @classmethod
    def _match(cls, value: dict[str, Any]) -> dict[str, Any]:
        return validate_match(value)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str] | None) -> list[str] | None:
        return _check_group_by(value)

    @model_validator(mode="after")
    def _templates(self) -> RouteConfig:
        _check_templates(self.title_template, self.body_template, self.body_format)
        afters = [t.after for t in self.escalate or []]
        if afters != sorted(afters) or len(set(afters)) != len(afters):
            raise ValueError("escalate: list the tiers in increasing order of after")
        return self

    def escalation_names(self) -> set[str]:
        """Every notifier name or tag this route's escalation tiers (and its children's) name."""
        out = {n for tier in self.escalate or [] for n in tier.notifiers}
        for child in self.routes or []:
            out |= child.escalation_names()
        return out

    def tags(self) -> set[str]:
        """Every tag this route and its children name."""
        out = set(self.notify or [])
        for child in self.routes or []:
            out |= child.tags()
        return out


def build_routes(
    routes: list[RouteConfig] | None, defaults: NotificationsConfig
) -> tuple[RouteNode, ...]:
    """The route tree with settings merged down from ``notifications``.

    Without routes, one implicit route sends everything to every notifier.
    """
    base = RouteSettings(
        notify=None,
        group_by=tuple(defaults.group_by),
        group_wait=defaults.group_wait,
        group_interval=defaults.group_interval,
        repeat_interval=defaults.repeat_interval or None,
        send_resolved=defaults.send_resolved,
    )
    if routes is None:
        return (RouteNode("routes(default)", {}, base),)
    return tuple(_node(route, f"routes[{i}]", base) for i, route in enumerate(routes))


def _node(route: RouteConfig, node_id: str, parent: RouteSettings) -> RouteNode:
    def pick(name: str, value: Any) -> Any:
        return getattr(parent, name) if value is None else value

    repeat = pick("repeat_interval", route.repeat_interval)
    settings = RouteSettings(
        notify=tuple(route.notify) if route.notify is not None else parent.notify,
        group_by=tuple(pick("group_by", route.group_by)),
        group_wait=pick("group_wait", route.group_wait),
        group_interval=pick("group_interval", route.group_interval),
        repeat_interval=repeat or None,
        send_resolved=pick("send_resolved", route.send_resolved),
        title_template=pick("title_template", route.title_template),
        body_template=pick("body_template", route.body_template),
        body_format=pick("body_format", route.body_format),
        escalate=(
            tuple(Tier(t.after, tuple(t.notifiers)) for t in route.escalate)
            if route.escalate is not None
            else parent.escalate
        ),
    )
    children = tuple(
        _node(child, f"{node_id}.routes[{i}]", settings)
        for i, child in enumerate(route.routes or [])
    )
    return RouteNode(node_id, to_matchers(route.match), settings, route.continue_, children)


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")


class WindowConfig(Strict):
    """A recurring maintenance window, in local time of ``timezone``."""

    start: str
    end: str
    timezone: str = "UTC"
    days: list[Day] = Field(default_factory=lambda: list(_DAYS))

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        found = _CLOCK.fullmatch(value.strip())
        if not found or int(found[1]) > 24 or int(found[2]) > 59:
            raise ValueError(f"expected a time of day such as '22:00', got {value!r}")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
            ) from None
        return value

    def window(self) -> Window:
        """The core window."""

        def parse(text: str) -> time:
            hours, minutes = (int(x) for x in text.split(":"))
            return time(23, 59, 59, 999999) if hours == 24 else time(hours, minutes)

        return Window(
            parse(self.start),
            parse(self.end),
            ZoneInfo(self.timezone),
            frozenset(_DAYS.index(d) for d in self.days),
        )


class SilenceConfig(Strict):
    """Events matching ``match`` are not sent while the silence holds."""

    name: str | None = None
    match: MatchSpec
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    windows: list[WindowConfig] = Field(default_factory=list)
    comment: str | None = None

    @field_validator("match")
    @classmethod
    def _match(cls, value: dict[str, Any]) -> dict[str, Any]:
        return validate_match(value)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-11-22T22:00:00Z or +01:00")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> SilenceConfig:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self

    def silence(self, index: int) -> Silence:
        """The core silence."""
        return Silence(
            id=self.name or f"silences[{index}]",
            matchers=to_matchers(self.match),
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            windows=tuple(w.window() for w in self.windows),
            comment=self.comment,
        )
