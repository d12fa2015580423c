"""Routing: which notifiers an event reaches, and with which delivery settings. Pure.

Routes form a small tree, as in Alertmanager. At each level the routes are tried in
order; the first whose ``match`` holds is entered (and its children tried), unless it
says ``continue``, in which case later routes are tried too. A route whose children
all decline is itself the match. Settings (notify tags, grouping, reminders,
templates) are inherited from parent to child unless overridden.

A match maps fields to accepted values. A list means any of them; a value
``!x`` means "not x", ``~re`` a regular expression that must match the whole
value, ``!~re`` one that must not. All fields of a match must hold.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from watcher.core.events import Event
from watcher.core.incidents import Tier

__all__ = [
    "MATCH_FIELDS",
    "BodyFormat",
    "Matcher",
    "RouteNode",
    "RouteSettings",
    "event_field",
    "matches",
    "parse_matcher",
    "resolve",
]

MATCH_FIELDS = frozenset(
    {
        "source",
        "kind",
        "severity",
        "status",
        "to_status",
        "from_status",
        "subject_id",
        "watch.type",
        "watch.id",
        "watch.name",
    }
)
"""Fields a route or silence can match on, besides ``labels.<name>``."""


def event_field(event: Event, name: str) -> str | None:
    """The value of ``name`` (a match field or ``labels.<x>``) for ``event``."""
    if name.startswith("labels."):
        return event.watch.labels.get(name.removeprefix("labels."))
    match name:
        case "source":
            return event.source.value
        case "kind":
            return event.kind.value
        case "severity":
            return event.severity.value
        case "status" | "to_status":
            return event.to_status
        case "from_status":
            return event.from_status
        case "subject_id":
            return event.subject_id
        case "watch.type":
            return event.watch.type.value
        case "watch.id":
            return event.watch.id
        case "watch.name":
            return event.watch.name
    raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Matcher:
    """Accepted values of one field: equal to any of ``equal`` or matching any of
    ``regex`` (when either is given), and none of the negative forms."""

    equal: frozenset[str] = frozenset()
    regex: tuple[re.Pattern[str], ...] = ()
    not_equal: frozenset[str] = frozenset()
    not_regex: tuple[re.Pattern[str], ...] = ()

    def accepts(self, value: str | None) -> bool:
        """Whether ``value`` (``None``: the field is absent) satisfies this matcher."""
        if self.equal or self.regex:
            if value is None:
                return False
            if value not in self.equal and not any(p.fullmatch(value) for p in self.regex):
                return False
        if value is None:
            return True
        return value not in self.not_equal and not any(p.fullmatch(value) for p in self.not_regex)


def parse_matcher(values: str | Sequence[str]) -> Matcher:
    """Build a matcher from ``"x"``, ``"!x"``, ``"~re"``, ``"!~re"`` or a list of them.

    Raises ``ValueError`` for an invalid regular expression.
    """
    items = [values] if isinstance(values, str) else list(values)
    equal: set[str] = set()
    not_equal: set[str] = set()
    regex: list[re.Pattern[str]] = []
    not_regex: list[re.Pattern[str]] = []
    for item in items:
        negative = item.startswith("!")
        body = item[1:] if negative else item
        if body.startswith("~"):
            try:
                pattern = re.compile(body[1:])
            except re.error as exc:
                raise ValueError(f"invalid regular expression {body[1:]!r}: {exc}") from None
            (not_regex if negative else regex).append(pattern)
        else:
            (not_equal if negative else equal).add(body)
    return Matcher(frozenset(equal), tuple(regex), frozenset(not_equal), tuple(not_regex))


def matches(matchers: Mapping[str, Matcher], event: Event) -> bool:
    """Whether every field matcher accepts the event."""
    return all(m.accepts(event_field(event, name)) for name, m in matchers.items())


BodyFormat = Literal["text", "markdown", "html"]


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """What a matching route decides. ``notify=None`` means every notifier."""

    notify: tuple[str, ...] | None = None
    group_by: tuple[str, ...] = ("watch", "kind")
    group_wait: float = 1.0
    group_interval: float = 10.0
    repeat_interval: float | None = None
    send_resolved: bool = False
    title_template: str | None = None
    body_template: str | None = None
    body_format: BodyFormat | None = None
    escalate: tuple[Tier, ...] = ()
    """Escalation tiers of the incidents this route takes, in order of ``after``."""


@dataclass(frozen=True, slots=True)
class RouteNode:
    """One route; ``settings`` are already merged with those of its ancestors."""

    id: str
    matchers: Mapping[str, Matcher] = field(default_factory=dict)
    settings: RouteSettings = field(default_factory=RouteSettings)
    continue_: bool = False
    children: tuple[RouteNode, ...] = ()


def resolve(routes: Sequence[RouteNode], event: Event) -> list[RouteNode]:
    """The routes that take ``event`` (deepest matches), in tree order."""
    taken: list[RouteNode] = []
    for node in routes:
        if not matches(node.matchers, event):
            continue
        deeper = resolve(node.children, event)
        taken.extend(deeper or [node])
        if not node.continue_:
            break
    return taken
