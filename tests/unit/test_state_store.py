"""The SQLite state file: private, WAL, round-trips, and honest failures."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.core.codec import (
    CodecError,
    discovery_from_dict,
    discovery_to_dict,
    watch_state_from_dict,
    watch_state_to_dict,
)
from watcher.core.events import Event, EventKind, WatchRef, WatchType, freeze
from watcher.core.health import HealthState, Problem, ProblemKind
from watcher.core.schedule import SchedulePolicy, initial_state
from watcher.core.snapshots import GroupSnapshot, RunSnapshot
from watcher.core.statuses import Severity, Source
from watcher.core.watch import DiscoveryState, WatchState
from watcher.daemon.state import OutboxRow, StateError, StateStore, WatchWrite
from watcher.notify.serialize import event_from_dict, event_to_dict

POLICY = SchedulePolicy()
NOW = datetime(2026, 11, 22, 10, tzinfo=UTC)


def store(tmp_path: Path) -> StateStore:
    (tmp_path / "sub").mkdir(exist_ok=True)
    s = StateStore(tmp_path / "sub" / "state.db")
    s.open()
    return s


def event(i: int = 1, cause: Event | None = None) -> Event:
    watch = WatchRef(WatchType.PARALLEL_TASK_GROUP, "tgrp_1", "nightly", freeze({"team": "data"}))
    return Event(
        f"evt_{i}",
        EventKind.GROUP_RUNS_FAILED,
        Severity.FAILURE,
        Source.PARALLEL,
        watch,
        f"trun_{i}",
        None,
        "failed",
        NOW,
        freeze({"error": "boom", "group_counts": {"failed": 1}}),
        url="https://x/trun",
        cause=cause,
    )


def test_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        s = store(tmp_path)
        s.commit([WatchWrite("k", "s", {"v": 1})], now=1.0)
    finally:
        os.umask(old)
    for path in (s.path, Path(f"{s.path}-wal")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def test_round_trip_and_delivery(tmp_path: Path) -> None:
    s = store(tmp_path)
    rows = [
        OutboxRow(f"evt_{i}", n, "routes[0]", event_to_dict(event(i)))
        for i in range(3)
        for n in ("a", "b")
    ]
    s.commit(
        [
            WatchWrite("w1", "tgrp_1", {"x": 1}),
            WatchWrite("w1/c", "run", {"y": 2}, parent="w1", finished_at=5.0),
        ],
        rows,
        10.0,
        [("cond", {"k": 1})],
    )
    s.commit([], rows[:2], 11.0)  # the same rows again: ignored
    s.delivered("a", ["evt_0", "evt_1"])
    s.close()
    again = StateStore(s.path)
    again.open()
    stored = again.load()
    assert stored.watches == {
        "w1": (None, "tgrp_1", {"x": 1}, None),
        "w1/c": ("w1", "run", {"y": 2}, 5.0),
    }
    assert [(r.event_id, r.notifier) for r in stored.outbox] == [
        ("evt_0", "b"),
        ("evt_1", "b"),
        ("evt_2", "a"),
        ("evt_2", "b"),
    ]
    assert event_from_dict(stored.outbox[0].event) == event(0)
    assert stored.conditions == {"cond": {"k": 1}}
    again.commit([WatchWrite("w1/c", "run", None)], [], 12.0, [("cond", None)])
    assert again.forget_notifier("b") == 3
    stored = again.load()
    assert list(stored.watches) == ["w1"]
    assert [(r.event_id, r.notifier) for r in stored.outbox] == [("evt_2", "a")]
    assert stored.conditions == {}


def test_full_and_read_only_files_fail_with_a_named_error_and_keep_old_data(tmp_path: Path) -> None:
    s = store(tmp_path)
    s.commit([WatchWrite("w", "s", {"a": 1})], now=1.0)
    pages = s.db.execute("PRAGMA page_count").fetchone()[0]
    s.limit_pages(pages)
    big = [OutboxRow(f"evt_{i}", "n", "r", {"pad": "x" * 2000}) for i in range(50)]
    with pytest.raises(StateError, match=r"cannot write the state file.*full"):
        s.commit([WatchWrite("w", "s", {"a": 2})], big, 2.0)
    s.limit_pages(1_000_000)
    s.read_only()
    with pytest.raises(StateError, match="readonly"):
        s.delivered("n", ["evt_0"])
    s.read_only(False)
    assert s.load().watches["w"][2] == {"a": 1}  # the failed transaction left nothing half-written


def test_unopenable_file_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(StateError, match="not a regular file"):
        StateStore(tmp_path / "dir").open()
    # A missing directory is not created: a typo must not keep state somewhere unwatched.
    with pytest.raises(StateError, match=r"directory .*/missing does not exist; create it"):
        StateStore(tmp_path / "missing" / "state.db").open()
    assert not (tmp_path / "missing").exists()


def test_a_damaged_file_is_moved_aside_and_a_fresh_one_started(tmp_path: Path) -> None:
    bad = tmp_path / "state.db"
    garbage = b"this is not sqlite" * 100
    bad.write_bytes(garbage)
    s = StateStore(bad, now=lambda: NOW)
    s.open()
    moved = tmp_path / "state.db.corrupt-20261122T100000Z"
    assert s.quarantined == moved
    assert moved.read_bytes() == garbage  # kept for a post-mortem
    s.commit([WatchWrite("w", "s", {"a": 1})], now=1.0)
    assert s.load().watches["w"][2] == {"a": 1}
    s.close()
    # A file damaged inside (a page overwritten) fails the integrity check the same way.
    good = tmp_path / "other.db"
    t = StateStore(good)
    t.open()
    t.commit([WatchWrite(f"w{i}", "s", {"pad": "x" * 3000}) for i in range(20)], now=1.0)
    t.close()
    data = bytearray(good.read_bytes())
    data[4096 * 2 : 4096 * 3] = b"\xff" * 4096
    good.write_bytes(bytes(data))
    u = StateStore(good, now=lambda: NOW)
    u.open()
    assert u.quarantined == tmp_path / "other.db.corrupt-20261122T100000Z"
    assert u.load().watches == {}


def test_event_codec_keeps_the_cause() -> None:
    e = event(2, cause=event(1))
    assert event_from_dict(event_to_dict(e)) == e


snapshots = st.one_of(
    st.none(),
    st.builds(
        RunSnapshot,
        source=st.sampled_from([Source.PARALLEL, Source.TRIGGER]),
        run_id=st.text(min_size=1, max_size=10),
        status=st.text(max_size=12),
        updated_at=st.none() | st.just("2026-11-22T10:00:00Z"),
        error_message=st.none() | st.text(max_size=30),
        task=st.none() | st.text(max_size=10),
        tags=st.tuples(st.text(max_size=5)),
        attempt=st.none() | st.integers(0, 10),
        delayed_until=st.none() | st.just(NOW),
    ),
    st.builds(
        GroupSnapshot,
        group_id=st.text(min_size=1, max_size=10),
        is_active=st.booleans(),
        num_task_runs=st.integers(0, 10**6),
        counts=st.dictionaries(st.text(min_size=1, max_size=8), st.integers(1, 1000)).map(freeze),
        status_message=st.none() | st.text(max_size=20),
        modified_at=st.none() | st.just("2026-11-22T10:00:00Z"),
    ),
)
healths = st.builds(
    HealthState,
    failures=st.integers(0, 50),
    reported=st.none() | st.sampled_from(list(ProblemKind)),
    last_problem=st.none()
    | st.builds(
        Problem,
        st.sampled_from(list(ProblemKind)),
        st.text(max_size=30),
        st.none() | st.integers(100, 599),
    ),
    episode=st.integers(0, 5),
)


@settings(max_examples=200)
@given(
    snapshots,
    healths,
    st.booleans(),
    st.none() | st.text(max_size=12),
    st.integers(0, 100),
    st.booleans(),
    st.none() | st.just(NOW),
    st.booleans(),
)
def test_watch_state_round_trips(
    snapshot: RunSnapshot | GroupSnapshot | None,
    health: HealthState,
    announce: bool,
    cursor: str | None,
    known: int,
    done: bool,
    since: datetime | None,
    stuck: bool,
) -> None:
    state = WatchState(
        initial_state(POLICY), snapshot, health, announce, cursor, known, done, since, stuck
    )
    assert watch_state_from_dict(watch_state_to_dict(state), POLICY) == state


@given(st.frozensets(st.text(max_size=12), max_size=50), st.booleans(), healths)
def test_discovery_state_round_trips(
    seen: frozenset[str], baseline: bool, health: HealthState
) -> None:
    state = DiscoveryState(initial_state(POLICY), health, seen, baseline)
    assert discovery_from_dict(discovery_to_dict(state), POLICY) == state


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"v": 99, "kind": "watch"},
        {"v": 1, "kind": "watch", "snapshot": {"type": "alien"}},
        {"v": 1, "kind": "watch", "health": "x"},
    ],
)
def test_damaged_state_is_a_codec_error(data: dict[str, object]) -> None:
    with pytest.raises(CodecError):
        watch_state_from_dict(data, POLICY)


def test_sqlite_module_is_the_standard_library() -> None:
    assert sqlite3.__file__ is not None
    assert "site-packages" not in sqlite3.__file__
