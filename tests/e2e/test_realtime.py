"""Trigger.dev watches on the environment's realtime feed, against the simulator's shapes.

One feed carries every followed run: a change is seen within a long poll and built from
its row (a wait, a resume, an outcome with its error, a retry numbered from the row's
history), so detection is fast and costs no ``/api`` request; the snapshot is every
covered run's first poll. The events are polling's own (same ids); a refused or failing feed
falls back to polling; a reset shape repeats nothing; runs the feed does not hold are
polled as before.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from harness import Env, run_daemon, running, stage

from watcher.core.diff import change_id
from watcher.core.events import EventKind, make_event_id
from watcher.core.statuses import Source
from watcher.simulator.realtime import RealtimeServer
from watcher.simulator.world import Fault, World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

# Polls far apart: whatever arrives quickly came by the feed.
SLOW = {"min_interval": "5s", "max_interval": "30s", "discovery_interval": "30s"}
FEED = {"trigger": {"realtime": True, "realtime_cross_check": "10m"}}


def run_watch(run_id: str, mode: str = "auto") -> dict[str, Any]:
    return {"type": "trigger_run", "id": run_id, "mode": mode}


def keyed(events: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return sorted((e["kind"], e["subject_id"], e["to_status"], e["event_id"]) for e in events)


async def covered(env: Env, *keys: str) -> None:
    """Wait until the feed holds every watch in ``keys``."""
    watcher = env.daemon.watcher
    assert watcher is not None
    with anyio.fail_after(10):
        while not all((rt := watcher.registry.get(k)) is not None and rt.pushed for k in keys):  # noqa: ASYNC110 - observing the feed's cover
            await anyio.sleep(0.02)


async def test_a_change_is_seen_within_a_long_poll_and_built_from_its_row() -> None:
    world = World()
    world.add_trigger_run("run_rt", "send-invoice", "EXECUTING")
    async with running([run_watch("run_rt")], world=world, polling=SLOW, sources=FEED) as env:
        await covered(env, "trigger_run:run_rt")
        polls = world.requests.get("trigger.run", 0)
        assert polls == 0  # the snapshot was the run's first poll
        started = anyio.current_time()
        world.set_trigger_run("run_rt", "FAILED", "card declined")
        events = await env.wait_until(lambda es: any(e["to_status"] == "FAILED" for e in es))
        latency = anyio.current_time() - started
        assert latency < 1.5  # the next poll was 5 s or more away
        assert world.requests.get("trigger.run", 0) == polls  # the row told the outcome
    (failed,) = events
    assert failed["details"]["error"] == "card declined"
    assert failed["details"]["error_stack"].startswith("Error: card declined")


async def test_a_wait_and_a_resume_cost_no_request_and_carry_pollings_ids() -> None:
    world = World()
    world.add_trigger_run("run_w", "send-invoice", "EXECUTING")
    async with running([run_watch("run_w")], world=world, polling=SLOW, sources=FEED) as env:
        await covered(env, "trigger_run:run_w")
        polls = world.requests.get("trigger.run", 0)
        expected = []
        for status in ("WAITING", "EXECUTING"):
            before = len(env.receiver.events())
            world.set_trigger_run("run_w", status)
            # The id polling makes: the run, the status and the API's updatedAt.
            stamp = world.trigger_runs["run_w"].updated_at
            expected.append(change_id(Source.TRIGGER, "run_w", status, stamp))

            def more(events: list[dict[str, Any]], before: int = before) -> bool:
                return len(events) > before

            await env.wait_until(more)
        assert world.requests.get("trigger.run", 0) == polls  # the rows told the whole change
        world.set_trigger_run("run_w", "FAILED", "card declined")
        events = await env.wait_until(lambda es: any(e["to_status"] == "FAILED" for e in es))
        assert world.requests.get("trigger.run", 0) == polls  # so did the outcome's
    assert [e["event_id"] for e in events[:2]] == expected
    assert [(e["from_status"], e["to_status"]) for e in events] == [
        ("EXECUTING", "WAITING"),
        ("WAITING", "EXECUTING"),
        ("EXECUTING", "FAILED"),
    ]
    assert events[2]["details"]["error"] == "card declined"


async def test_a_retry_is_numbered_from_the_rows_once_the_attempt_is_known() -> None:
    # The snapshot baselines a running run without its attempt count (rows have none):
    # its first retry is read once, which numbers it; later retries come from the rows
    # alone, named by their attempt as polling names them.
    world = World()
    world.add_trigger_run("run_r", "sync", "EXECUTING")
    async with running([run_watch("run_r")], world=world, polling=SLOW, sources=FEED) as env:
        await covered(env, "trigger_run:run_r")
        for attempt in (2, 3):
            world.set_trigger_run("run_r", "RETRYING_AFTER_FAILURE")
            world.set_trigger_run("run_r", "EXECUTING")

            def retried(events: list[dict[str, Any]], attempt: int = attempt) -> bool:
                return any(e["details"].get("attempt") == attempt for e in events)

            await env.wait_until(retried)
        assert world.requests.get("trigger.run", 0) == 1  # the first retry only
        events = env.receiver.events()
    assert [(e["kind"], e["details"]["attempt"]) for e in events] == [
        ("run.retrying", 2),
        ("run.retrying", 3),
    ]
    ids = [e["event_id"] for e in events]
    assert ids == [
        make_event_id(Source.TRIGGER, "run_r", EventKind.RUN_RETRYING, n) for n in (2, 3)
    ]


async def test_the_cross_check_lists_the_covered_runs_and_catches_a_lost_update() -> None:
    world = World()
    for run_id in ("run_a", "run_b", "run_c"):
        world.add_trigger_run(run_id, "sync", "EXECUTING")
    sources = {"trigger": {**FEED["trigger"], "realtime_cross_check": "2s"}}
    watches = [run_watch(r) for r in ("run_a", "run_b", "run_c")]
    async with running(watches, world=world, polling=SLOW, sources=sources) as env:
        await covered(env, "trigger_run:run_a", "trigger_run:run_b", "trigger_run:run_c")
        polls, lists = world.requests.get("trigger.run", 0), world.requests.get("trigger.list", 0)
        # The run moves where the feed cannot see it (an update the feed lost).
        run = world.trigger_runs["run_b"]
        run.move("WAITING", None, world._trigger_stamp())
        started = anyio.current_time()
        events = await env.wait_until(lambda es: any(e["to_status"] == "WAITING" for e in es))
        assert anyio.current_time() - started < 4.5  # the next own poll was 5 s or more away
        assert world.requests["trigger.list"] > lists  # one page checked all three runs
        assert world.requests.get("trigger.run", 0) == polls + 1  # and only the moved one was read
    assert [(e["subject_id"], e["to_status"]) for e in events] == [("run_b", "WAITING")]


async def test_the_feed_and_polling_send_the_same_events_with_the_same_ids() -> None:
    # The same script on two worlds whose clocks the test sets: the provider's times,
    # and so the event ids, are the same in both; the feed's events come from rows.
    base = datetime.now(UTC).replace(microsecond=0)
    script = [
        ("EXECUTING", None),
        ("WAITING", None),
        ("EXECUTING", None),
        ("RETRYING_AFTER_FAILURE", None),
        ("EXECUTING", None),
        ("FAILED", "card declined"),
    ]

    async def play(mode: str) -> tuple[list[dict[str, Any]], int]:
        tick = [base]
        world = World(now=lambda: tick[0])
        world.add_trigger_run("run_x", "sync", "QUEUED")
        polling = SLOW if mode == "auto" else {"min_interval": "100ms", "max_interval": "200ms"}
        async with running(
            [run_watch("run_x", mode)], world=world, polling=polling, sources=FEED
        ) as env:
            if mode == "auto":
                await covered(env, "trigger_run:run_x")
            else:
                await world.wait_for_requests("trigger.run", 1)
            for step, (status, error) in enumerate(script, start=1):
                before = len(env.receiver.events())

                def more(events: list[dict[str, Any]], before: int = before) -> bool:
                    return len(events) > before

                tick[0] = base + timedelta(seconds=step, milliseconds=7 * step)
                world.set_trigger_run("run_x", status, error)
                if status != "RETRYING_AFTER_FAILURE":  # a retry shows once it runs again
                    await env.wait_until(more)
            events = await env.settle()
            return events, world.requests.get("trigger.run", 0)

    (pushed, pushed_reads), (polled, _) = await play("auto"), await play("poll")

    def essence(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (
                e["event_id"],
                e["kind"],
                e["from_status"],
                e["to_status"],
                e["details"].get("attempt"),
                e["details"].get("error"),
                e["details"].get("finished_at"),
                e["details"].get("duration_seconds"),
                e["details"].get("version"),
            )
            for e in events
        ]

    assert essence(pushed) == essence(polled)
    assert len(pushed) == 5
    assert pushed[-1]["details"]["error"] == "card declined"
    assert [e["kind"] for e in pushed].count("run.retrying") == 1
    assert pushed_reads == 1  # the first attempt's start, for the version it locked


async def test_a_refused_feed_falls_back_to_polling_and_says_so() -> None:
    world = World()
    world.add_trigger_run("run_f", "sync", "EXECUTING")
    world.add_fault(Fault(match="/realtime/v1/runs", status=403))
    polling = {"min_interval": "200ms", "max_interval": "400ms"}
    async with running([run_watch("run_f")], world=world, polling=polling, sources=FEED) as env:
        feed = env.daemon.watcher.realtime if env.daemon.watcher else None
        assert feed is not None
        with anyio.fail_after(10):
            while feed.fallbacks < 1:  # noqa: ASYNC110 - observing the feed's fall-backs
                await anyio.sleep(0.02)
        world.set_trigger_run("run_f", "COMPLETED")
        events = await env.wait_until(lambda es: any(e["to_status"] == "COMPLETED" for e in es))
        assert not env.daemon.watcher.registry["trigger_run:run_f"].pushed  # type: ignore[union-attr]
    assert [e["to_status"] for e in events] == ["COMPLETED"]


async def test_a_reset_shape_is_read_again_and_nothing_repeats() -> None:
    world = World()
    world.add_trigger_run("run_r", "sync", "EXECUTING")
    world.add_trigger_run("run_s", "sync", "EXECUTING")
    realtime = RealtimeServer(world, long_poll=2.0)
    watches = [run_watch("run_r"), run_watch("run_s")]
    async with running(watches, world=world, polling=SLOW, sources=FEED, realtime=realtime) as env:
        await covered(env, "trigger_run:run_r", "trigger_run:run_s")
        world.set_trigger_run("run_r", "FAILED", "boom")
        await env.wait_until(lambda es: len(es) == 1)
        realtime.reset()
        with anyio.fail_after(10):
            await world.wait_for_requests("trigger.realtime_reset", 1)
        world.set_trigger_run("run_s", "COMPLETED")
        await env.wait_until(lambda es: len(es) == 2)
        await covered(env, "trigger_run:run_r", "trigger_run:run_s")
        events = env.receiver.events()
    assert sorted((e["subject_id"], e["to_status"]) for e in events) == [
        ("run_r", "FAILED"),
        ("run_s", "COMPLETED"),
    ]


async def test_runs_the_feed_does_not_hold_are_polled() -> None:
    world = World()
    old = datetime.now(UTC) - timedelta(days=2)
    world.add_trigger_run("run_old", "sync", "EXECUTING", created_at=old)
    world.add_trigger_run("run_new", "sync", "EXECUTING")
    polling = {"min_interval": "200ms", "max_interval": "400ms"}
    watches = [run_watch("run_old"), run_watch("run_new")]
    async with running(watches, world=world, polling=polling, sources=FEED) as env:
        await covered(env, "trigger_run:run_new")
        assert env.daemon.watcher is not None
        assert not env.daemon.watcher.registry["trigger_run:run_old"].pushed  # outside the window
        world.set_trigger_run("run_old", "COMPLETED")
        await env.wait_until(lambda es: any(e["subject_id"] == "run_old" for e in es))


async def test_a_new_run_on_the_feed_starts_a_discovery_pass_early() -> None:
    world = World()
    watch = {"type": "trigger_runs", "filter": {"task": ["charge"]}}
    async with running([watch], world=world, polling=SLOW, sources=FEED) as env:
        feed = env.daemon.watcher.realtime if env.daemon.watcher else None
        assert feed is not None
        with anyio.fail_after(10):
            while feed.state.phase.value != "streaming":  # noqa: ASYNC110 - observing the feed
                await anyio.sleep(0.02)
        lists = world.requests.get("trigger.list", 0)
        started = anyio.current_time()
        world.add_trigger_run("run_new", "charge", "FAILED", error="card declined")
        await env.wait_until(lambda es: any(e["subject_id"] == "run_new" for e in es))
        assert anyio.current_time() - started < 3.0  # the next pass was 30 s away
        assert world.requests["trigger.list"] > lists


async def test_the_feed_spends_nothing_from_the_api_budget() -> None:
    world = World()
    for i in range(20):
        world.add_trigger_run(f"run_{i:02d}", "sync", "EXECUTING")
    watches = [run_watch(f"run_{i:02d}") for i in range(20)]
    # Idle long polls end quickly; the snapshot comes in chunks of 6 rows.
    realtime = RealtimeServer(world, long_poll=0.5, chunk=6)
    async with running(
        watches,
        world=world,
        polling=SLOW,
        sources=FEED,
        realtime=realtime,
        http={"listen": "127.0.0.1:0"},
    ) as env:
        await covered(env, *(f"trigger_run:run_{i:02d}" for i in range(20)))
        await env.daemon.ready.wait()
        spent = world.requests.get("trigger.run", 0)
        assert spent == 0  # ready from the snapshot: no run was polled for its baseline
        with anyio.fail_after(10):
            await world.wait_for_requests(
                "trigger.realtime_live", world.requests.get("trigger.realtime_live", 0) + 2
            )
        assert world.requests.get("trigger.run", 0) == spent  # idle runs: no polls while covered
        assert env.daemon.metrics is not None
        exposition = env.daemon.metrics.render().decode()
    assert world.requests["trigger.realtime_snapshot_chunk"] == 3  # 20 rows: 6 + 6 + 6 + 2
    assert "run_watcher_realtime_covered_runs 20.0" in exposition
    assert "run_watcher_realtime_sessions_total 1.0" in exposition


async def test_the_connection_limit_falls_back_to_polling() -> None:
    world = World()
    world.add_trigger_run("run_l", "sync", "EXECUTING")
    realtime = RealtimeServer(world, limit=0)  # every live request: 429
    polling = {"min_interval": "200ms", "max_interval": "400ms"}
    async with running(
        [run_watch("run_l")], world=world, polling=polling, sources=FEED, realtime=realtime
    ) as env:
        feed = env.daemon.watcher.realtime if env.daemon.watcher else None
        assert feed is not None
        with anyio.fail_after(15):
            while feed.fallbacks < 1:  # noqa: ASYNC110 - observing the feed's fall-backs
                await anyio.sleep(0.02)
        assert world.requests["trigger.realtime_limited"] >= 3  # three failures, then polling
        world.set_trigger_run("run_l", "CRASHED", "oom")
        events = await env.wait_until(lambda es: any(e["to_status"] == "CRASHED" for e in es))
    assert [e["to_status"] for e in events] == ["CRASHED"]


async def test_a_restart_resumes_the_feed_without_a_snapshot(tmp_path: Path) -> None:
    world = World()
    world.add_trigger_run("run_p", "sync", "EXECUTING")
    watches = [run_watch("run_p")]
    async with stage(tmp_path, world) as st:
        async with run_daemon(st.daemon(watches, polling=SLOW, sources=FEED)) as first:
            assert first.watcher is not None
            with anyio.fail_after(10):
                while not first.watcher.registry["trigger_run:run_p"].pushed:  # noqa: ASYNC110 - observing the feed's cover
                    await anyio.sleep(0.02)
        snapshots = world.requests["trigger.realtime_snapshot"]
        world.set_trigger_run("run_p", "FAILED", "while down")  # the shape's log moves on
        async with run_daemon(st.daemon(watches, polling=SLOW, sources=FEED)) as second:
            events = await st.events_until(lambda evs: any(e["to_status"] == "FAILED" for e in evs))
            assert second.watcher is not None
            assert second.watcher.realtime is not None
            assert second.watcher.realtime.sessions == 1
        # Resumed from the stored handle and offset: a catch-up read, not a new snapshot.
        assert world.requests["trigger.realtime_snapshot"] == snapshots
        assert world.requests["trigger.realtime_catch_up"] >= 1
    assert [(e["subject_id"], e["to_status"]) for e in events] == [("run_p", "FAILED")]
    assert events[0]["details"]["seen_late"] is True  # it changed while the daemon was down


async def test_ready_comes_from_the_snapshot_not_from_the_api_budget() -> None:
    # 300 runs on a budget of 30 requests a minute: a first pass by polls would take
    # ten minutes; the snapshot holds every run's status at no /api cost.
    world = World()
    for i in range(300):
        world.add_trigger_run(f"run_{i:03d}", "sync", "EXECUTING")
    sources = {"trigger": {**FEED["trigger"], "requests_per_minute": 30, "burst": 1, "reserve": 0}}
    watches = [run_watch(f"run_{i:03d}") for i in range(300)]
    async with running(watches, world=world, polling=SLOW, sources=sources) as env:
        with anyio.fail_after(15):
            await env.daemon.ready.wait()
        assert world.requests.get("trigger.run", 0) <= 1
        world.set_trigger_run("run_123", "CRASHED", "out of memory")
        events = await env.wait_until(lambda es: any(e["to_status"] == "CRASHED" for e in es))
    assert [(e["subject_id"], e["details"]["error"]) for e in events] == [
        ("run_123", "out of memory")
    ]


async def test_a_capped_feed_covers_the_rest_with_tag_and_run_shapes() -> None:
    # 30 runs, a shape cap of 10: the environment's shape holds the newest 10. Of the
    # 20 left out, 8 share a tag (one tag shape) and 4 more get a shape each (6
    # connections in all); the last 8 stay polled, and are counted.
    world = World()
    start = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(30):
        tags = ["batch"] if i < 8 else []
        world.add_trigger_run(
            f"run_{i:02d}", "sync", "EXECUTING", tags=tags, created_at=start + timedelta(seconds=i)
        )
    realtime = RealtimeServer(world, cap=10)
    sources = {"trigger": {**FEED["trigger"], "realtime_connections": 6, "realtime_cap": 10}}
    watches = [run_watch(f"run_{i:02d}") for i in range(30)]
    async with running(
        watches,
        world=world,
        polling=SLOW,
        sources=sources,
        realtime=realtime,
        http={"listen": "127.0.0.1:0"},
    ) as env:
        feed = env.daemon.watcher.realtime if env.daemon.watcher else None
        assert feed is not None
        with anyio.fail_after(15):
            while len(feed.covered) < 22:  # noqa: ASYNC110 - observing the feed's cover
                await anyio.sleep(0.05)
        assert sorted(s.label for s in feed.extra.readers) == [
            "run:run_08",
            "run:run_09",
            "run:run_10",
            "run:run_11",
            "tag:batch",
        ]
        assert env.daemon.metrics is not None
        exposition = env.daemon.metrics.render().decode()
        assert "run_watcher_realtime_uncovered_runs 8.0" in exposition
        assert "run_watcher_realtime_connections 6.0" in exposition
        reads = world.requests.get("trigger.run", 0)
        started = anyio.current_time()
        for run_id in ("run_03", "run_09", "run_25"):  # a tag shape's, a run shape's, the main's
            world.set_trigger_run(run_id, "FAILED", f"{run_id} failed")
        events = await env.wait_until(lambda es: len(es) >= 3)
        assert anyio.current_time() - started < 3.0  # polls are 5 s or more apart
        assert world.requests.get("trigger.run", 0) == reads  # built from the rows
        with anyio.fail_after(10):  # run_09 finished: its connection goes to the next run
            while "run:run_12" not in {s.label for s in feed.extra.readers}:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        assert "run:run_09" not in {s.label for s in feed.extra.readers}
    assert sorted(e["subject_id"] for e in events) == ["run_03", "run_09", "run_25"]


async def test_the_plans_connection_limit_shrinks_the_extra_shapes() -> None:
    world = World()
    start = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(12):
        world.add_trigger_run(
            f"run_{i:02d}", "sync", "EXECUTING", created_at=start + timedelta(seconds=i)
        )
    # Three live requests at once: the environment's shape and two extra ones.
    realtime = RealtimeServer(world, cap=4, limit=3, long_poll=5.0)
    sources = {"trigger": {**FEED["trigger"], "realtime_connections": 6, "realtime_cap": 4}}
    watches = [run_watch(f"run_{i:02d}") for i in range(12)]
    async with running(
        watches, world=world, polling=SLOW, sources=sources, realtime=realtime
    ) as env:
        feed = env.daemon.watcher.realtime if env.daemon.watcher else None
        assert feed is not None
        with anyio.fail_after(20):
            while feed.extra.limited < 1 or feed.extra.live != 2:  # noqa: ASYNC110 - observing
                await anyio.sleep(0.05)
        assert feed.extra.slots == 2
        assert feed.streaming()  # the environment's shape kept its connection
        assert feed.uncovered() == 12 - 4 - 2
