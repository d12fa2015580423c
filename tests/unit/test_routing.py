from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watcher.config.loader import ConfigError, parse_config
from watcher.config.notifications import build_routes
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.routing import RouteNode, event_field, parse_matcher, resolve
from watcher.core.statuses import Severity, Source

NOTIFIERS = """
notifiers:
  - {url: "json://a", tags: [oncall]}
  - {url: "json://b", tags: [audit]}
  - {url: "json://c", tags: [data]}
  - {url: "json://d", tags: [pager]}
"""


def event(
    severity: Severity = Severity.FAILURE,
    kind: EventKind = EventKind.RUN_STATUS_CHANGED,
    team: str = "data",
    name: str = "nightly-enrichment",
    to_status: str = "FAILED",
) -> Event:
    return Event(
        "evt_1",
        kind,
        severity,
        Source.TRIGGER,
        WatchRef(WatchType.TRIGGER_RUN, "run_a", name, freeze({"team": team})),
        "run_a",
        "EXECUTING",
        to_status,
        datetime(2026, 1, 1, tzinfo=UTC),
    )


def tree(routes_yaml: str, extra: str = "") -> tuple[RouteNode, ...]:
    config = parse_config(NOTIFIERS + extra + routes_yaml)
    return build_routes(config.routes, config.notifications)


def taken(routes: tuple[RouteNode, ...], e: Event) -> list[tuple[str, tuple[str, ...] | None]]:
    return [(r.id, r.settings.notify) for r in resolve(routes, e)]


def test_spine_list_first_match_wins() -> None:
    routes = tree(
        """
routes:
  - {match: {severity: [failure, warning]}, notify: [oncall]}
  - {match: {}, notify: [audit]}
"""
    )
    assert taken(routes, event(Severity.FAILURE)) == [("routes[0]", ("oncall",))]
    assert taken(routes, event(Severity.SUCCESS)) == [("routes[1]", ("audit",))]


def test_continue_and_children_with_inherited_settings() -> None:
    routes = tree(
        """
routes:
  - match: {labels.team: data}
    notify: [data]
    group_wait: 30s
    repeat_interval: 4h
    continue: true
    routes:
      - match: {severity: failure}
        notify: [pager]
      - match: {watch.name: "~nightly-.*", severity: "!info"}
        group_wait: 5s
  - match: {}
    notify: [audit]
"""
    )
    failure = resolve(routes, event(Severity.FAILURE))
    assert [r.id for r in failure] == ["routes[0].routes[0]", "routes[1]"]
    assert failure[0].settings.notify == ("pager",)
    assert failure[0].settings.group_wait == 30.0
    assert failure[0].settings.repeat_interval == 14400.0
    warning = resolve(routes, event(Severity.WARNING))
    assert warning[0].id == "routes[0].routes[1]"
    assert warning[0].settings.notify == ("data",)  # inherited from the parent
    assert warning[0].settings.group_wait == 5.0
    info = resolve(routes, event(Severity.INFO))
    assert [r.id for r in info] == ["routes[0]", "routes[1]"]  # no child matches: the parent does
    other_team = resolve(routes, event(team="web"))
    assert [r.id for r in other_team] == ["routes[1]"]


def test_defaults_come_from_notifications_and_no_routes_means_everyone() -> None:
    routes = tree(
        "",
        "notifications: {group_wait: 2s, group_interval: 1m, send_resolved: true, repeat_interval: 1h}\n",
    )
    (node,) = resolve(routes, event())
    assert node.settings.notify is None
    assert (node.settings.group_wait, node.settings.group_interval) == (2.0, 60.0)
    assert node.settings.send_resolved is True
    assert node.settings.repeat_interval == 3600.0


def test_repeat_interval_zero_turns_reminders_off_below() -> None:
    routes = tree(
        """
notifications: {repeat_interval: 1h}
routes:
  - {match: {severity: info}, repeat_interval: 0, notify: [audit]}
"""
    )
    assert resolve(routes, event(Severity.INFO))[0].settings.repeat_interval is None


@pytest.mark.parametrize(
    ("spec", "value", "accepted"),
    [
        ("failure", "failure", True),
        (["failure", "warning"], "warning", True),
        ("!info", "failure", True),
        ("!info", "info", False),
        (["!info", "!success"], "success", False),
        ("~nightly-.*", "nightly-enrichment", True),
        ("~nightly-.*", "weekly", False),
        ("!~test-.*", "test-run", False),
        ("!~test-.*", None, True),
        ("failure", None, False),
        (["~a.*", "b"], "b", True),
    ],
)
def test_matcher_forms(spec: str | list[str], value: str | None, accepted: bool) -> None:
    assert parse_matcher(spec).accepts(value) is accepted


def test_bad_matchers_and_tags_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="invalid regular expression"):
        tree("routes: [{match: {watch.name: '~(unclosed'}, notify: [audit]}]\n")
    with pytest.raises(ConfigError, match="unknown value '!fatal'"):
        tree("routes: [{match: {severity: '!fatal'}, notify: [audit]}]\n")
    with pytest.raises(ConfigError, match="no notifier has tag 'nobody'"):
        tree("routes: [{match: {}, notify: [audit], routes: [{match: {}, notify: [nobody]}]}]\n")
    with pytest.raises(ConfigError, match="unknown group_by field 'colour'"):
        tree("routes: [{match: {}, notify: [audit], group_by: [colour]}]\n")


def test_event_fields() -> None:
    e = event()
    assert event_field(e, "status") == event_field(e, "to_status") == "FAILED"
    assert event_field(e, "from_status") == "EXECUTING"
    assert event_field(e, "watch.type") == "trigger_run"
    assert event_field(e, "watch.name") == "nightly-enrichment"
    assert event_field(e, "labels.team") == "data"
    assert event_field(e, "labels.none") is None
