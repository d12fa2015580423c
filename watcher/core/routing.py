"""Routing: which notifier tags an event goes to. Pure.

Routes are tried in order; the first that matches decides, unless it says
``continue``, in which case later routes are tried too. A match is a mapping of
field to accepted values (a list means any of them); all fields must match.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from watcher.core.events import Event

__all__ = ["MATCH_FIELDS", "Route", "event_field", "route_tags"]

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
"""Fields a route can match on, besides ``labels.<name>``."""


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
class Route:
    """One route: all of ``match`` must hold; then ``notify`` tags get the event."""

    match: Mapping[str, frozenset[str]]
    notify: tuple[str, ...]
    continue_: bool = False

    def matches(self, event: Event) -> bool:
        """True when every field of the match accepts the event."""
        for name, accepted in self.match.items():
            value = event_field(event, name)
            if value is None or value not in accepted:
                return False
        return True


def route_tags(routes: Sequence[Route], event: Event) -> tuple[str, ...]:
    """The notifier tags ``event`` is routed to, in route order, without repeats."""
    tags: dict[str, None] = {}
    for route in routes:
        if route.matches(event):
            tags.update(dict.fromkeys(route.notify))
            if not route.continue_:
                break
    return tuple(tags)


def notifiers_for(tags: Iterable[str], notifier_tags: Sequence[frozenset[str]]) -> list[int]:
    """Indexes of the notifiers that carry any of ``tags``."""
    wanted = set(tags)
    return [i for i, own in enumerate(notifier_tags) if own & wanted]
