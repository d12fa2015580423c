"""Restarts, the outbox, a failing disk, hot reload, retention: nothing lost, nothing twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import yaml
from harness import make_config, run_daemon, settled, stage

from watcher.config.settings import Settings
from watcher.daemon.app import Daemon
from watcher.daemon.state import StateStore
from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


WATCHES = [
    {"type": "trigger_run", "id": "run_a"},
    {"type": "trigger_run", "id": "run_b"},
    {"type": "parallel_task_group", "id": "tgrp_r", "name": "nightly"},
]


def world_for_restart() -> World:
    world = World()
    world.add_trigger_run("run_a", "a", "EXECUTING")
    world.add_trigger_run("run_b", "b", "EXECUTING")
    world.add_group("tgrp_r", 3, status="running")
    return world


async def test_a_restart_neither_repeats_nor_loses(tmp_path: Path) -> None:
    world = world_for_restart()
    async with stage(tmp_path, world) as st:
        async with run_daemon(st.daemon(WATCHES)):
            world.set_trigger_run("run_a", "FAILED", "before the restart")
            await st.events_until(lambda evs: len(evs) >= 1)
        # While the daemon is down:
        world.set_trigger_run("run_b", "COMPLETED")
        (failed,) = world.progress_group("tgrp_r", 1, "failed", "while down")
        async with run_daemon(st.daemon(WATCHES)) as d:
            events = await st.events_until(
                lambda evs: (
                    any(e["kind"] == "group.runs_failed" for e in evs)
                    and any(e["subject_id"] == "run_b" for e in evs)
                )
            )
            await settled(d)
            events = st.receiver.events()
    keyed = Counter((e["kind"], e["subject_id"], e["to_status"]) for e in events)
    assert keyed[("run.status_changed", "run_a", "FAILED")] == 1  # not repeated after the restart
    assert (
        keyed[("run.status_changed", "run_b", "COMPLETED")] == 1
    )  # happened while down: notified once
    assert keyed[("group.runs_failed", failed, "failed")] == 1
    late = [e for e in events if e["subject_id"] in ("run_b", failed)]
    assert all(e["details"].get("seen_late") is True for e in late)
    early = next(e for e in events if e["subject_id"] == "run_a")
    assert "seen_late" not in early["details"]
    assert len({e["event_id"] for e in events}) == len(events)


async def test_the_outbox_survives_a_restart_and_is_delivered_once(tmp_path: Path) -> None:
    world = world_for_restart()
    async with stage(tmp_path, world) as st:
        st.receiver.fail_first = 10**9  # the notifier is down
        quick: dict[str, Any] = {
            "delivery": {
                "max_attempts": 1000,
                "retry_for": "10m",
                "initial_backoff": "50ms",
                "max_backoff": "100ms",
                "drain_timeout": "500ms",
            }
        }
        async with run_daemon(st.daemon(WATCHES, **quick)) as first:
            world.set_trigger_run("run_a", "FAILED", "owed")
            world.set_trigger_run("run_b", "CRASHED", "owed too")
            assert first.watcher is not None
            registry = first.watcher.registry
            with anyio.fail_after(10):
                # Both changes seen (so both in the outbox), and the notifier refusing them.
                while st.receiver.rejected < 3 or any(  # noqa: ASYNC110 - observing the daemon and receiver
                    registry[k].finished_at is None
                    for k in ("trigger_run:run_a", "trigger_run:run_b")
                ):
                    await anyio.sleep(0.05)
        assert st.receiver.received == []
        st.receiver.fail_first = 0  # the notifier is back
        async with run_daemon(st.daemon(WATCHES, **quick)) as d:
            events = await st.events_until(lambda evs: len(evs) >= 2)
            await settled(d)
            events = st.receiver.events()
    assert sorted((e["subject_id"], e["to_status"]) for e in events) == [
        ("run_a", "FAILED"),
        ("run_b", "CRASHED"),
    ]
    assert all("seen_late" not in e["details"] for e in events)  # seen in time, delivered late


async def test_a_failing_state_file_loses_durability_not_notifications(tmp_path: Path) -> None:
    world = world_for_restart()
    async with stage(tmp_path, world) as st:
        daemon = st.daemon(WATCHES)
        async with run_daemon(daemon):
            store = daemon.durability.store
            assert store is not None
            await store.call(store.read_only)
            world.set_trigger_run("run_a", "FAILED", "on a read-only disk")
            events = await st.events_until(
                lambda evs: (
                    any(e["kind"] == "state.unavailable" for e in evs)
                    and any(e["subject_id"] == "run_a" for e in evs)
                )
            )
            await store.call(store.read_only, False)
            world.set_trigger_run("run_b", "COMPLETED")
            events = await st.events_until(
                lambda evs: (
                    any(e["kind"] == "state.recovered" for e in evs)
                    and any(e["subject_id"] == "run_b" for e in evs)
                )
            )
            pages = await store.call(lambda: store.db.execute("PRAGMA page_count").fetchone()[0])
            await store.call(store.limit_pages, pages)
            world.progress_group("tgrp_r", 3, "completed")
            events = await st.events_until(
                lambda evs: any(e["kind"] == "group.finished" for e in evs), within=20
            )
    unavailable = next(e for e in events if e["kind"] == "state.unavailable")
    assert unavailable["source"] == "watcher"
    assert "readonly" in unavailable["details"]["error"]
    assert [e["kind"] for e in events].count("state.unavailable") >= 1
    assert any(e["subject_id"] == "run_a" and e["to_status"] == "FAILED" for e in events)


async def test_hot_reload_adds_removes_and_keeps_state(tmp_path: Path) -> None:
    world = world_for_restart()
    world.add_trigger_run("run_new", "n", "EXECUTING")
    async with stage(tmp_path, world) as st:
        path = tmp_path / "watcher.yaml"
        daemon = st.daemon(WATCHES, config_path=path)

        def write(watches: list[dict[str, Any]], **extra: Any) -> None:
            data = {
                "watches": watches,
                "notifiers": [
                    {
                        "url": st.receiver.apprise_url("json"),
                        "tags": ["all"],
                        "format": "json",
                        "name": "audit",
                    }
                ],
                "state_file": str(st.state),
                **extra,
            }
            path.write_text(yaml.safe_dump(data))

        async with run_daemon(daemon) as d:
            assert d.watcher is not None
            old_rt = d.watcher.registry["trigger_run:run_a"]
            write([WATCHES[0], {"type": "trigger_run", "id": "run_new", "name": "new"}])
            with structlog.testing.capture_logs() as logs:
                assert await d.reload_from_file()
            assert (
                d.watcher.registry["trigger_run:run_a"] is old_rt
            )  # kept, with its state and schedule
            assert "trigger_run:run_b" not in d.watcher.registry
            assert "trigger_run:run_new" in d.watcher.registry
            assert any(e["event"] == "configuration reloaded" for e in logs)
            # The first poll of an added watch is its silent baseline: change
            # upstream only after it, as a real transition would happen.
            new_rt = d.watcher.registry["trigger_run:run_new"]
            with anyio.fail_after(10):
                while new_rt.last_ok_at is None:  # noqa: ASYNC110 - observing the runtime
                    await anyio.sleep(0.02)
            world.set_trigger_run("run_new", "FAILED", "after the reload")
            world.set_trigger_run("run_a", "COMPLETED")
            world.set_trigger_run("run_b", "FAILED", "no longer watched")
            events = await st.events_until(
                lambda evs: {e["subject_id"] for e in evs} >= {"run_new", "run_a"}
            )
            path.write_text("watches: [{type: trigger_run, id: 'bad/id'}]\n")
            with structlog.testing.capture_logs() as logs:
                assert not await d.reload_from_file()
            refused = next(
                e for e in logs if e["event"] == "reload refused; the running configuration stays"
            )
            assert "watches[0].id" in refused["problems"][0]
            assert "trigger_run:run_new" in d.watcher.registry
            await settled(d)
            events = st.receiver.events()
    assert Counter(e["subject_id"] for e in events) == Counter({"run_new": 1, "run_a": 1})


async def test_finished_runs_are_retired_and_memory_stays_flat(tmp_path: Path) -> None:
    world = World()
    async with stage(tmp_path, world) as st:
        watch = {"type": "trigger_runs", "id": "churn", "filter": {"task": ["churn"]}}
        daemon = st.daemon([watch], retention="1s")
        sizes = []
        async with run_daemon(daemon) as d:
            assert d.watcher is not None
            for cycle in range(4):
                ids = [f"run_c{cycle}_{i:03d}" for i in range(40)]
                for run_id in ids:
                    world.add_trigger_run(run_id, "churn", "EXECUTING")
                await st.events_until(
                    lambda evs, ids=ids: {e["subject_id"] for e in evs} >= set(ids)
                )
                for run_id in ids:
                    world.set_trigger_run(run_id, "COMPLETED")
                await st.events_until(
                    lambda evs, ids=ids: (
                        sum(
                            1
                            for e in evs
                            if e["subject_id"] in ids and e["to_status"] == "COMPLETED"
                        )
                        >= 40
                    )
                )
                with anyio.fail_after(15):  # retention (1s) plus a sweep
                    while d.watcher.retired < 40 * (cycle + 1):  # noqa: ASYNC110 - observing the sweeper
                        await anyio.sleep(0.05)
                sizes.append(len(d.watcher.registry))
            store = d.durability.store
            assert store is not None
            rows = await store.call(
                lambda: store.db.execute("SELECT count(*) FROM watches").fetchone()[0]
            )

            def count_outbox() -> int:
                return int(store.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

            # The last message's outbox row goes after its send returns: wait for it.
            with anyio.fail_after(10):
                while (outbox := await store.call(count_outbox)) != 0:  # noqa: ASYNC110 - observing the state file
                    await anyio.sleep(0.05)
    assert sizes == [1, 1, 1, 1], sizes  # only the trigger_runs watch itself stays
    assert rows == 1
    assert outbox == 0
    assert d.watcher.retired == 160


async def test_state_file_holds_no_secret(tmp_path: Path) -> None:
    """The outbox stores events and notifier ids: never keys, URLs or passwords."""
    world = World(parallel_key="pk-SECRET-IN-STATE-1", trigger_key="tr_prod_SECRET-IN-STATE-2")
    world.add_trigger_run("run_a", "a", "EXECUTING")
    async with stage(tmp_path, world) as st:
        st.receiver.fail_first = 10**9  # keep the events in the outbox
        url = f"json://hook:SECRET-IN-STATE-3@127.0.0.1:{st.receiver.server.port}/hook"
        config = make_config(
            st.sim.url,
            [{"url": url, "tags": ["all"], "format": "json"}],
            watches=[{"type": "trigger_run", "id": "run_a"}],
            state_file=str(st.state),
            delivery={"drain_timeout": "200ms"},
        )
        daemon = Daemon(
            config,
            Settings(parallel_api_key=world.parallel_key, trigger_secret_key=world.trigger_key),
        )
        async with run_daemon(daemon):
            world.set_trigger_run("run_a", "FAILED", "kept")
            with anyio.fail_after(10):
                while st.receiver.rejected < 1:  # noqa: ASYNC110 - the receiver counts refusals
                    await anyio.sleep(0.05)
    raw = b""
    async for path in anyio.Path(tmp_path).iterdir():
        if path.name.startswith("state.db"):
            raw += await path.read_bytes()
    assert b"run_a" in raw  # the event is in there ...
    for secret in (b"pk-SECRET-IN-STATE-1", b"tr_prod_SECRET-IN-STATE-2", b"SECRET-IN-STATE-3"):
        assert secret not in raw  # ... and no secret is


def quarantined(folder: Path) -> tuple[Path, bytes]:
    """The one damaged file moved aside in ``folder``, and what it holds."""
    (moved,) = folder.glob("state.db.corrupt-*")
    return moved, moved.read_bytes()


async def test_a_damaged_state_file_is_moved_aside_and_said_so(tmp_path: Path) -> None:
    world = world_for_restart()
    async with stage(tmp_path, world) as st:
        st.state.write_bytes(b"not a database at all" * 200)
        daemon = st.daemon(WATCHES)
        async with run_daemon(daemon):
            events = await st.events_until(
                lambda evs: any(e["kind"] == "state.unavailable" for e in evs)
            )
            world.set_trigger_run("run_a", "FAILED", "after the fresh start")
            events = await st.events_until(lambda evs: any(e["subject_id"] == "run_a" for e in evs))
    moved, kept = quarantined(tmp_path)
    assert kept.startswith(b"not a database at all")
    (notice,) = [e for e in events if e["kind"] == "state.unavailable"]
    assert notice["details"]["moved_to"] == str(moved)
    assert "damaged" in notice["details"]["error"]
    assert StateStore(st.state).path.exists()  # the fresh file, in use
