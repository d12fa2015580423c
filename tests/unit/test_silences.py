from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from watcher.config.loader import ConfigError, parse_config
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.routing import parse_matcher
from watcher.core.silences import Silence, Window, silenced_by
from watcher.core.statuses import Severity, Source

BERLIN = ZoneInfo("Europe/Berlin")


def event(team: str = "data") -> Event:
    watch = WatchRef(WatchType.TRIGGER_RUN, "run_a", "n", freeze({"team": team}))
    return Event(
        "e",
        EventKind.RUN_STATUS_CHANGED,
        Severity.FAILURE,
        Source.TRIGGER,
        watch,
        "run_a",
        "A",
        "B",
        datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_absolute_window() -> None:
    s = Silence(
        "s",
        {"labels.team": parse_matcher("data")},
        datetime(2026, 1, 1, 10, tzinfo=UTC),
        datetime(2026, 1, 1, 12, tzinfo=UTC),
    )
    assert silenced_by([s], event(), datetime(2026, 1, 1, 11, tzinfo=UTC)) is s
    assert silenced_by([s], event(), datetime(2026, 1, 1, 12, tzinfo=UTC)) is None
    assert silenced_by([s], event("web"), datetime(2026, 1, 1, 11, tzinfo=UTC)) is None


def test_recurring_window_past_midnight_in_local_time() -> None:
    # Friday 22:00 to 06:00 Berlin time.
    window = Window(time(22), time(6), BERLIN, frozenset({4}))
    s = Silence("nightly", windows=(window,))
    friday_late = datetime(2026, 11, 20, 23, 30, tzinfo=BERLIN)
    saturday_early = datetime(2026, 11, 21, 5, 59, tzinfo=BERLIN)
    saturday_late = datetime(2026, 11, 21, 23, 0, tzinfo=BERLIN)
    thursday_late = datetime(2026, 11, 19, 23, 0, tzinfo=BERLIN)
    assert s.active(friday_late)
    assert s.active(saturday_early)
    assert not s.active(saturday_late)
    assert not s.active(thursday_late)
    assert s.active(friday_late.astimezone(UTC))  # the same instant in UTC


def test_daytime_window_and_dst() -> None:
    window = Window(time(9), time(17), BERLIN)
    summer = datetime(2026, 7, 1, 7, 30, tzinfo=UTC)  # 09:30 CEST
    winter = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)  # 08:30 CET
    assert window.contains(summer)
    assert not window.contains(winter)


def test_silences_from_config() -> None:
    config = parse_config(
        """
silences:
  - name: weekend-maintenance
    match: {labels.team: data}
    windows: [{days: [sat, sun], start: "00:00", end: "24:00", timezone: Europe/Berlin}]
  - match: {severity: "!failure"}
    starts_at: 2026-11-22T10:00:00Z
    ends_at: 2026-11-22T12:00:00Z
    comment: deploy
"""
    )
    silences = [s.silence(i) for i, s in enumerate(config.silences)]
    assert silences[0].id == "weekend-maintenance"
    assert silences[0].active(datetime(2026, 11, 22, 12, tzinfo=UTC))  # a Sunday
    assert not silences[0].active(datetime(2026, 11, 23, 12, tzinfo=UTC))
    assert silences[1].id == "silences[1]"


@pytest.mark.parametrize(
    ("yaml", "needle"),
    [
        ("silences: [{match: {}, starts_at: '2026-11-22T10:00:00'}]", "give a time zone"),
        ("silences: [{match: {}, windows: [{start: '25:00', end: '06:00'}]}]", "time of day"),
        (
            "silences: [{match: {}, windows: [{start: '22:00', end: '06:00', timezone: Mars/Olympus}]}]",
            "unknown time zone",
        ),
        (
            "silences: [{match: {}, starts_at: 2026-11-22T12:00:00Z, ends_at: 2026-11-22T10:00:00Z}]",
            "ends_at must be after",
        ),
        ("silences: [{match: {severity: fatal}}]", "unknown value 'fatal'"),
    ],
)
def test_bad_silences(yaml: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_config(yaml)
