"""Expected runs on virtual time: a period, a cron schedule in a zone (DST days too),
once per window, across a restart; and the config errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watcher.config.loader import ConfigError, parse_config
from watcher.core.absence import AbsenceState, Expectation, check_absence
from watcher.core.codec import discovery_from_dict, discovery_to_dict
from watcher.core.conditions import ConditionBook
from watcher.core.events import Event, EventKind, WatchRef, WatchType
from watcher.core.schedule import SchedulePolicy, initial_state
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source
from watcher.core.watch import DiscoveryState

WATCH = WatchRef(WatchType.TRIGGER_RUNS, "nightly")
T0 = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
DAILY = Expectation(status="COMPLETED", grace=1800.0, every=86400.0)
BERLIN = Expectation(
    status="COMPLETED", grace=45 * 60.0, schedule="0 2 * * *", timezone="Europe/Berlin"
)


def run(run_id: str, status: str, created: datetime) -> RunSnapshot:
    stamp = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return RunSnapshot(Source.TRIGGER, run_id, status, updated_at=stamp, created_at=stamp)


def absent(events: tuple[Event, ...]) -> list[Event]:
    return [e for e in events if e.kind is EventKind.RUNS_ABSENT]


def look(
    exp: Expectation, state: AbsenceState, runs: list[RunSnapshot], now: datetime
) -> tuple[AbsenceState, tuple[Event, ...], float]:
    return check_absence(exp, state, runs, now, watch=WATCH)


def test_every_period_alerts_once_after_period_and_grace_and_a_late_run_resolves() -> None:
    state = AbsenceState(since=T0)
    state, events, check_in = look(DAILY, state, [], T0 + timedelta(hours=1))
    assert events == ()
    assert check_in == pytest.approx(86400 + 1800 - 3600)  # looked at when the window closes
    due = T0 + timedelta(days=1, minutes=30)
    state, events, _ = look(DAILY, state, [], due - timedelta(seconds=1))
    assert events == ()
    failed = run("run_f1", "FAILED", T0 + timedelta(hours=20))
    state, events, _ = look(DAILY, state, [failed], due)
    [event] = absent(events)
    assert event.details["seen_text"] == "1 run FAILED, none COMPLETED"
    assert event.details["last_match"] is None
    assert event.details["window_start"] == "2026-03-27T12:00:00Z"
    state, again, _ = look(DAILY, state, [failed], due + timedelta(hours=2))
    assert again == ()  # one window, one alert
    # A late run: its own status change closes the condition.
    book = ConditionBook()
    book.observe(event)
    late = run("run_ok", "COMPLETED", due + timedelta(hours=3))
    state, events, _ = look(DAILY, state, [failed, late], due + timedelta(hours=3, minutes=1))
    assert events == ()
    assert state.last is not None
    assert state.last.run_id == "run_ok"
    change = Event(
        event_id="evt_late",
        kind=EventKind.RUN_STATUS_CHANGED,
        severity=event.severity,
        source=Source.TRIGGER,
        watch=WATCH,
        subject_id="run_ok",
        from_status="EXECUTING",
        to_status="COMPLETED",
        observed_at=due + timedelta(hours=3),
    )
    [(condition, resolved)] = book.observe(change)
    assert condition.opened.event_id == event.event_id
    assert resolved.details["now"] == "COMPLETED"


def test_a_period_counts_from_the_last_matching_run() -> None:
    last = run("run_a", "COMPLETED", T0 + timedelta(hours=5))
    state, _, _ = look(DAILY, AbsenceState(since=T0), [last], T0 + timedelta(hours=6))
    state, events, _ = look(DAILY, state, [last], T0 + timedelta(days=1, minutes=31))
    assert events == ()  # 24 h 30 m after run_a is 17:30 the next day
    state, events, _ = look(DAILY, state, [last], T0 + timedelta(days=1, hours=5, minutes=31))
    [event] = absent(events)
    assert event.details["last_match"]["id"] == "run_a"


def test_a_schedule_in_a_zone_checks_each_fire_time_plus_grace() -> None:
    # 02:00 Berlin on 2026-03-27 is 01:00 UTC (CET); the check is at 02:45 local.
    since = datetime(2026, 3, 26, 12, 0, tzinfo=UTC)
    state = AbsenceState(since=since)
    fire = datetime(2026, 3, 27, 1, 0, tzinfo=UTC)
    ok = run("run_1", "COMPLETED", fire + timedelta(minutes=1))
    state, events, _ = look(BERLIN, state, [ok], fire + timedelta(minutes=46))
    assert events == ()
    # The next night: two failures, no success by 02:45.
    fire2 = fire + timedelta(days=1)
    runs = [
        ok,
        run("run_2", "FAILED", fire2 + timedelta(minutes=1)),
        run("run_3", "FAILED", fire2 + timedelta(minutes=10)),
    ]
    state, events, _ = look(BERLIN, state, runs, fire2 + timedelta(minutes=44))
    assert events == ()
    state, events, _ = look(BERLIN, state, runs, fire2 + timedelta(minutes=46))
    [event] = absent(events)
    assert event.details["window_start"] == "2026-03-28T01:00:00Z"
    assert event.details["seen_text"] == "2 runs FAILED, none COMPLETED"
    assert event.details["last_match"]["id"] == "run_1"


def test_a_0230_schedule_fires_at_0300_on_the_spring_forward_day_and_once_on_fall_back() -> None:
    exp = Expectation(
        status="COMPLETED", grace=900.0, schedule="30 2 * * *", timezone="Europe/Berlin"
    )
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; Debian cron runs the 02:30 job at 03:00,
    # which is 01:00 UTC; the check is 15 minutes later.
    state = AbsenceState(since=datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    state, events, check_in = look(exp, state, [], datetime(2026, 3, 29, 1, 14, tzinfo=UTC))
    assert events == ()
    assert check_in == pytest.approx(60.0)
    state, events, _ = look(exp, state, [], datetime(2026, 3, 29, 1, 15, tzinfo=UTC))
    assert [e.details["window_start"] for e in absent(events)] == ["2026-03-29T01:00:00Z"]
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice, the job once
    # (00:30 UTC); the repeated hour does not ask for a second run.
    state = AbsenceState(since=datetime(2026, 10, 24, 12, 0, tzinfo=UTC))
    ok = run("run_fb", "COMPLETED", datetime(2026, 10, 25, 0, 31, tzinfo=UTC))
    state, events, _ = look(exp, state, [ok], datetime(2026, 10, 25, 0, 46, tzinfo=UTC))
    assert events == ()
    state, events, _ = look(exp, state, [ok], datetime(2026, 10, 25, 1, 46, tzinfo=UTC))
    assert events == ()


def test_started_within_wants_the_run_created_soon_after_the_fire_time() -> None:
    exp = Expectation(status="COMPLETED", grace=3600.0, schedule="0 2 * * *", started_within=900.0)
    fire = datetime(2026, 3, 27, 2, 0, tzinfo=UTC)
    slow_start = run("run_s", "COMPLETED", fire + timedelta(minutes=20))
    state = AbsenceState(since=fire - timedelta(hours=1))
    state, events, _ = look(exp, state, [slow_start], fire + timedelta(minutes=61))
    assert [e.details["seen_text"] for e in absent(events)] == ["1 run COMPLETED, none COMPLETED"]


def test_the_window_reported_survives_a_restart() -> None:
    state = AbsenceState(since=T0)
    due = T0 + timedelta(days=1, minutes=30)
    state, events, _ = look(DAILY, state, [], due)
    assert len(absent(events)) == 1
    stored = discovery_to_dict(
        DiscoveryState(schedule=initial_state(SchedulePolicy(1.0, 10.0)), absence=state)
    )
    back = discovery_from_dict(stored, SchedulePolicy(1.0, 10.0))
    assert back.absence == state
    assert back.absence is not None
    _, again, _ = look(DAILY, back.absence, [], due + timedelta(minutes=5))
    assert again == ()


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ("{schedule: '0 2 * * *', timezone: Mars/Olympus}", "unknown time zone 'Mars/Olympus'"),
        ("{schedule: '0 25 * * *'}", "invalid cron expression '0 25 * * *'"),
        ("{every: 1h, grace: 2h}", "expect.grace (7200s) must be shorter than expect.every"),
        ("{schedule: '*/10 * * * *', grace: 15m}", "shorter than the time between two runs"),
        ("{every: 1d, schedule: '0 2 * * *'}", "give one of expect.every"),
        ("{every: 1d, status: DONE}", "expect.status 'DONE' is not a Trigger.dev status"),
    ],
)
def test_a_bad_expectation_is_refused_naming_the_watch_and_the_field(
    expect: str, message: str
) -> None:
    text = f"watches:\n  - {{type: trigger_runs, id: nightly, expect: {expect}}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert "watches[0].expect" in str(caught.value)
    assert message in str(caught.value)


def test_expect_on_a_watch_that_cannot_list_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("watches:\n  - {type: trigger_run, id: run_a, expect: {every: 1d}}\n")
    assert "watches[0].expect: unknown key" in str(caught.value)
