"""Group event streams end to end: the simulator streams, the daemon follows.

Proves the issue's promises against a real SSE server on loopback: stream and
poll mode notify the same transitions with the same event ids; a dropped
stream resumes from its last event id with nothing lost or repeated; a
refused or failing stream falls back to polling; a reload to ``poll`` or
removing the watch closes its stream; the cap on open streams holds; the
heartbeat arrives and no silence mutes it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
from harness import Env, make_config, run_daemon, running
from prometheus_client.parser import text_string_to_metric_families

from watcher.config.settings import Settings
from watcher.daemon.app import Daemon
from watcher.simulator.receiver import WebhookReceiver
from watcher.simulator.world import Fault, World

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

POLLING = {"min_interval": "100ms", "max_interval": "2s"}
GROUP_KINDS = {"group.runs_failed", "group.counts_changed", "group.finished"}


def group(mode: str, group_id: str = "tgrp_s") -> dict[str, Any]:
    return {"type": "parallel_task_group", "id": group_id, "mode": mode}


def failures(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["subject_id"] for e in events if e["kind"] == "group.runs_failed")


def finished(events: list[dict[str, Any]]) -> bool:
    return any(e["kind"] == "group.finished" for e in events)


async def play(world: World, group_id: str = "tgrp_s", pause: float = 0.6) -> None:
    """A scripted day of one group: failures, completions, the end."""
    for count, status in ((1, "failed"), (2, "completed"), (1, "failed"), (2, "completed")):
        await anyio.sleep(pause)
        world.progress_group(group_id, count, status, "boom" if status == "failed" else None)


async def test_stream_and_poll_mode_send_the_same_events_with_the_same_ids() -> None:
    world = World()
    world.add_group("tgrp_s", 6, status="running")
    async with running([group("stream")], world=world, polling=POLLING) as env:
        poll_receiver = WebhookReceiver()
        async with anyio.create_task_group() as tg:
            await tg.start(poll_receiver.server.serve)
            config = make_config(
                env.sim.url,
                [(poll_receiver.apprise_url(), ["all"], "json")],
                watches=[group("poll")],
                polling=POLLING,
            )
            polled = Daemon(
                config,
                Settings(parallel_api_key=world.parallel_key, trigger_secret_key="x"),
            )
            async with run_daemon(polled):
                await play(world)
                streamed = await env.wait_until(finished)
                with anyio.fail_after(10):
                    await poll_receiver.wait_until(
                        lambda rs: finished([e for r in rs for e in r.events])
                    )
            tg.cancel_scope.cancel()
    assert env.daemon.watcher is not None
    assert env.daemon.watcher.streams is not None
    assert env.daemon.watcher.streams.connects >= 1
    assert world.requests["parallel.events_stream"] >= 1

    def ids(events: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {
            (e["event_id"], e["kind"], e["subject_id"]) for e in events if e["kind"] in GROUP_KINDS
        }

    assert ids(streamed) == ids(poll_receiver.events())
    assert failures(streamed) == Counter(dict.fromkeys(world.group_runs("tgrp_s", "failed"), 1))


async def test_stream_detects_a_failure_well_within_the_poll_interval() -> None:
    world = World()
    world.add_group("tgrp_s", 4, status="running")
    polling = {"min_interval": "5s", "max_interval": "30s"}
    async with running([group("stream")], world=world, polling=polling) as env:
        await wait_streaming(env, "tgrp_s")
        started = anyio.current_time()
        world.progress_group("tgrp_s", 1, "failed", "boom")
        await env.wait_until(lambda es: bool(failures(es)), within=3)
        assert anyio.current_time() - started < 1.5  # a poll would take up to 5 s
        assert world.requests["parallel.group"] == 1  # the baseline; no poll since


async def test_a_dropped_stream_resumes_from_its_last_event_without_loss_or_repeat() -> None:
    world = World()
    world.add_group("tgrp_s", 8, status="running")
    # The first connection breaks mid-event after two events; later ones do not.
    world.add_fault(Fault(match="/events", kind="break_stream", after=2, times=1))
    async with running([group("stream")], world=world, polling=POLLING) as env:
        with anyio.fail_after(10):
            await world.wait_for_requests("parallel.events_stream", 1)
        # The history replayed, then this failure's events: the stream breaks among them.
        world.progress_group("tgrp_s", 1, "failed", "boom")
        with anyio.fail_after(10):
            await world.wait_for_requests("parallel.events_stream", 2)  # it reconnected
        for _ in range(3):
            world.progress_group("tgrp_s", 1, "failed", "boom")
        world.progress_group("tgrp_s", 4, "completed")
        await env.wait_until(finished)
        events = await env.settle()
    assert failures(events) == Counter(dict.fromkeys(world.group_runs("tgrp_s", "failed"), 1))
    assert len(world.event_cursors) >= 2
    # The reconnect resumed after the last complete event, not from the start.
    assert world.event_cursors[0] is None
    assert world.event_cursors[1] is not None


async def test_history_replayed_by_the_stream_is_not_announced_again() -> None:
    world = World()
    world.add_group("tgrp_s", 5, status="running")
    old = world.progress_group("tgrp_s", 2, "failed", "before the watcher started")
    # A server whose group timestamp does not move: only the named-run set can tell.
    world.groups["tgrp_s"].modified_at = "2020-01-01T00:00:00.000000Z"
    async with running([group("stream")], world=world, polling=POLLING) as env:
        await wait_streaming(env, "tgrp_s")  # what follows comes after the replayed history
        (new,) = world.progress_group("tgrp_s", 1, "failed", "boom")
        await env.wait_until(lambda es: bool(failures(es)))
        events = await env.settle()
    assert world.event_cursors[0] is None  # connected without a cursor: full replay
    assert failures(events) == Counter({new: 1})
    assert not set(old) & set(failures(events))


@pytest.mark.parametrize("status", [404, 503])
async def test_a_refused_stream_falls_back_to_polling(status: int) -> None:
    world = World()
    world.add_group("tgrp_s", 6, status="running")
    refusal = world.add_fault(Fault(match="/events", status=status))
    async with running([group("auto")], world=world, polling=POLLING) as env:
        assert env.daemon.watcher is not None
        streams = env.daemon.watcher.streams
        assert streams is not None
        # A refusal (404) falls back at once, an outage (503) after three tries.
        with anyio.fail_after(15):
            while streams.fallbacks == 0:  # noqa: ASYNC110 - observing the stream workers
                await anyio.sleep(0.05)
        polls = world.requests["parallel.group"]
        tries = refusal.hits
        await play(world, pause=0.3)
        events = await env.wait_until(finished)
    assert failures(events) == Counter(dict.fromkeys(world.group_runs("tgrp_s", "failed"), 1))
    assert streams.open == 0
    assert refusal.hits == tries  # no retry before stream_retry_after
    assert world.requests["parallel.group"] > polls  # what arrived came by polling


async def wait_streaming(env: Env, group_id: str) -> None:
    """Wait until the group's stream delivers (its first event, the group's status, arrived)."""
    assert env.daemon.watcher is not None
    registry = env.daemon.watcher.registry
    with anyio.fail_after(10):
        while not ((rt := registry.get(f"parallel_task_group:{group_id}")) and rt.streaming):  # noqa: ASYNC110 - observing the feed's phase
            await anyio.sleep(0.02)


async def wait_open(env: Env, count: int) -> None:
    assert env.daemon.watcher is not None
    streams = env.daemon.watcher.streams
    assert streams is not None
    with anyio.fail_after(10):
        while streams.open != count:  # noqa: ASYNC110 - observing the stream workers
            await anyio.sleep(0.02)


async def test_a_reload_to_poll_mode_or_removing_the_watch_closes_its_stream_at_once() -> None:
    world = World()
    world.add_group("tgrp_s", 6, status="running")
    world.add_group("tgrp_t", 6, status="running")
    watches = [group("auto"), group("auto", "tgrp_t")]
    async with running(watches, world=world, polling=POLLING) as env:
        await wait_open(env, 2)

        async def reload(watches: list[dict[str, Any]]) -> None:
            config = make_config(
                env.sim.url,
                [{"url": env.receiver.apprise_url("json"), "tags": ["all"]}],
                watches=watches,
                polling=POLLING,
            )
            await env.daemon.apply_config(config, env.daemon.channels)

        await reload([group("poll"), group("auto", "tgrp_t")])
        await wait_open(env, 1)  # well before the stream's idle timeout
        await reload([group("poll")])
        await wait_open(env, 0)
        connects = world.requests["parallel.events_stream"]
        world.progress_group("tgrp_s", 1, "failed", "boom")
        events = await env.wait_until(lambda es: len(failures(es)) == 1)
        assert world.requests["parallel.events_stream"] == connects  # polled, not streamed
    assert set(failures(events)) == set(world.group_runs("tgrp_s", "failed"))


async def test_open_streams_stay_within_the_cap_and_the_rest_are_polled() -> None:
    world = World()
    ids = [f"tgrp_c{i}" for i in range(3)]
    for group_id in ids:
        world.add_group(group_id, 3, status="running")
    peak = 0

    async def sample(env: Env) -> None:
        nonlocal peak
        while True:
            assert env.daemon.watcher is not None
            assert env.daemon.watcher.streams is not None
            peak = max(peak, env.daemon.watcher.streams.open)
            await anyio.sleep(0.02)

    async with (
        running(
            [group("auto", g) for g in ids],
            world=world,
            polling=POLLING,
            sources={"parallel": {"max_streams": 1}},
            http={"listen": "127.0.0.1:0"},
        ) as env,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(sample, env)
        await wait_open(env, 1)
        for group_id in ids:
            world.progress_group(group_id, 1, "failed", "boom")
        await env.wait_until(lambda es: len(failures(es)) == 3)
        tg.cancel_scope.cancel()
        assert env.daemon.metrics is not None
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(env.daemon.metrics.render().decode())
            for sample in family.samples
        }
    assert peak == 1
    assert samples["run_watcher_group_streams_open"] <= 1
    assert samples["run_watcher_group_stream_connects_total"] >= 1


async def test_heartbeat_arrives_on_schedule_and_no_silence_mutes_it() -> None:
    hb = WebhookReceiver()
    async with anyio.create_task_group() as tg:
        await tg.start(hb.server.serve)
        world = World()
        world.add_trigger_run("run_h", "task", "EXECUTING")
        async with running(
            [{"type": "trigger_run", "id": "run_h"}],
            world=world,
            notifiers=[
                {"url": hb.apprise_url(), "tags": ["deadman"], "format": "json"},
            ],
            heartbeat={"notify": ["deadman"], "interval": "300ms"},
            silences=[{"match": {}, "ends_at": "2999-01-01T00:00:00Z"}],
        ):
            with anyio.fail_after(5):
                await hb.wait_for(3)
        tg.cancel_scope.cancel()
    beats = [e for r in hb.received for e in r.events]
    assert {e["kind"] for e in beats} == {"watcher.heartbeat"}
    assert len({e["event_id"] for e in beats}) == len(beats)
    assert "watching 1" in beats[0]["details"]["status"]
