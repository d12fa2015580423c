from __future__ import annotations

from datetime import UTC, datetime

from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.routing import Route, event_field, notifiers_for, route_tags
from watcher.core.statuses import Severity, Source


def event(
    severity: Severity = Severity.FAILURE,
    kind: EventKind = EventKind.RUN_STATUS_CHANGED,
    team: str = "data",
) -> Event:
    return Event(
        "evt_1",
        kind,
        severity,
        Source.TRIGGER,
        WatchRef(WatchType.TRIGGER_RUN, "run_a", "nightly", freeze({"team": team})),
        "run_a",
        "EXECUTING",
        "FAILED",
        datetime(2026, 1, 1, tzinfo=UTC),
    )


ROUTES = [
    Route({"severity": frozenset({"failure", "warning"})}, ("oncall",)),
    Route({}, ("audit",)),
]


def test_first_match_wins() -> None:
    assert route_tags(ROUTES, event(Severity.FAILURE)) == ("oncall",)
    assert route_tags(ROUTES, event(Severity.SUCCESS)) == ("audit",)


def test_continue_collects_later_routes_too() -> None:
    routes = [Route({"labels.team": frozenset({"data"})}, ("data",), continue_=True), *ROUTES]
    assert route_tags(routes, event()) == ("data", "oncall")
    assert route_tags(routes, event(team="web")) == ("oncall",)


def test_all_fields_must_match_and_missing_values_do_not() -> None:
    route = Route(
        {
            "source": frozenset({"trigger"}),
            "kind": frozenset({"run.status_changed"}),
            "labels.env": frozenset({"prod"}),
        },
        ("x",),
    )
    assert not route.matches(event())


def test_event_fields() -> None:
    e = event()
    assert event_field(e, "status") == event_field(e, "to_status") == "FAILED"
    assert event_field(e, "from_status") == "EXECUTING"
    assert event_field(e, "watch.type") == "trigger_run"
    assert event_field(e, "watch.name") == "nightly"
    assert event_field(e, "watch.id") == "run_a"
    assert event_field(e, "labels.team") == "data"
    assert event_field(e, "labels.none") is None


def test_no_match_routes_nowhere() -> None:
    assert route_tags([Route({"severity": frozenset({"info"})}, ("x",))], event()) == ()


def test_notifiers_for_tags() -> None:
    assert notifiers_for(
        ["oncall"], [frozenset({"oncall", "all"}), frozenset({"audit"}), frozenset()]
    ) == [0]
