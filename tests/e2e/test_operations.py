"""Operations end to end: HTTP endpoints, metrics, the watch API, sd_notify and sharding.

The daemon runs in-process against the simulator and a webhook receiver on
loopback; its endpoints are read with a real HTTP client, its metrics with
prometheus_client's own parser, its systemd messages from a real unix
datagram socket.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from harness import make_config, run_daemon, running, settled
from prometheus_client.parser import text_string_to_metric_families

from watcher.config.settings import Settings
from watcher.daemon.app import Daemon
from watcher.daemon.sdnotify import SystemdNotifier
from watcher.http_server import HttpServer
from watcher.simulator.api import SimulatorApi, TriggerLimiter
from watcher.simulator.receiver import WebhookReceiver
from watcher.simulator.world import Fault, World

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

TOKEN = "test-token-0123456789abcdef"
LOCAL = {"listen": "127.0.0.1:0"}


def settings(world: World, token: str | None = TOKEN) -> Settings:
    return Settings(
        parallel_api_key=world.parallel_key,
        trigger_secret_key=world.trigger_key,
        watcher_api_token=token,
    )


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(
    parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (n, ls), v in parsed.items()
        if n == name and all(dict(ls).get(k) == val for k, val in labels.items())
    )


def api_url(daemon: Daemon) -> str:
    assert daemon.http is not None
    return daemon.http.url


async def test_probes_metrics_and_watch_list() -> None:
    def setup(world: World) -> None:
        world.add_trigger_run("run_a", "deploy", "EXECUTING")
        world.add_group("tgrp_a", 4, status="running")

    watches: list[dict[str, Any]] = [
        {"type": "trigger_run", "id": "run_a", "name": "deploy-a", "labels": {"team": "web"}},
        {"type": "parallel_task_group", "id": "tgrp_a"},
    ]
    async with running(watches, setup=setup, http=LOCAL) as env:
        url = api_url(env.daemon)
        env.world.set_trigger_run("run_a", "FAILED", "boom")
        await env.wait_events(1)
        async with httpx.AsyncClient(base_url=url) as client:
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
            # The receiver has the message; the daemon counts it once the send returns.
            with anyio.fail_after(10):
                while 'result="sent"} 1.0' not in (metrics := await client.get("/metrics")).text:  # noqa: ASYNC110 - read as a scraper would
                    await anyio.sleep(0.05)
            listing = await client.get("/watches", headers=auth())
            missing = await client.get("/nope")
            wrong = await client.post("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert ready.status_code == 200
    assert ready.json() == {"ready": True}
    assert missing.status_code == 404
    assert wrong.status_code == 405

    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    parsed = samples(metrics.text)
    assert total(parsed, "run_watcher_polls_total", source="trigger", outcome="ok") >= 2
    assert total(parsed, "run_watcher_polls_total", source="parallel", outcome="ok") >= 1
    assert total(parsed, "run_watcher_upstream_requests_total", source="trigger", code="200") >= 2
    assert total(parsed, "run_watcher_poll_duration_seconds_count", source="trigger") >= 2
    assert (
        total(parsed, "run_watcher_events_total", kind="run.status_changed", severity="failure")
        == 1
    )
    assert total(parsed, "run_watcher_watches", source="trigger", kind="run", state="finished") == 1
    assert total(parsed, "run_watcher_watches", source="parallel", kind="group", state="ok") == 1
    assert total(parsed, "run_watcher_ready") == 1
    assert (
        total(parsed, "run_watcher_last_successful_poll_timestamp_seconds", source="trigger") > 1e9
    )
    # Notifiers by their private name: the receiver's URL path is not a secret, its name is shown.
    sent = [
        (dict(ls), v)
        for (n, ls), v in parsed.items()
        if n == "run_watcher_notifications_total" and dict(ls)["result"] == "sent"
    ]
    assert len(sent) == 1
    assert sent[0][0]["notifier"].startswith("json://127.0.0.1")
    assert sent[0][1] >= 1
    assert total(parsed, "run_watcher_notification_queue") == 0

    assert listing.status_code == 200
    rows = {w["key"]: w for w in listing.json()["watches"]}
    assert set(rows) == {"trigger_run:run_a", "parallel_task_group:tgrp_a"}
    run = rows["trigger_run:run_a"]
    assert (run["name"], run["labels"], run["origin"]) == ("deploy-a", {"team": "web"}, "config")
    assert (run["state"], run["status"]) == ("finished", "FAILED")
    group = rows["parallel_task_group:tgrp_a"]
    assert group["state"] == "ok"
    assert group["status"] == "active"
    assert group["counts"]["running"] == 4


async def test_watch_api_needs_the_token_validates_and_watches() -> None:
    def setup(world: World) -> None:
        world.add_trigger_run("run_cfg", "deploy", "EXECUTING")
        world.add_trigger_run("run_new", "deploy", "EXECUTING")

    world = World()
    setup(world)
    async with running(
        [{"type": "trigger_run", "id": "run_cfg"}],
        world=world,
        http=LOCAL,
        settings=settings(world),
    ) as env:
        entry = {
            "type": "trigger_run",
            "id": "run_new",
            "name": "from-the-app",
            "expire_after": "1h",
        }
        async with httpx.AsyncClient(base_url=api_url(env.daemon)) as client:
            anonymous = await client.post("/watches", json=entry)
            wrong = await client.post("/watches", json=entry, headers=auth("x" * 30))
            listing = await client.get("/watches")
            created = await client.post("/watches", json=entry, headers=auth())
            again = await client.post("/watches", json=entry, headers=auth())
            escape = await client.post(
                "/watches", json={"type": "trigger_run", "id": "../etc"}, headers=auth()
            )
            unknown = await client.post(
                "/watches", json={"type": "cron", "id": "x"}, headers=auth()
            )
            typo = await client.post(
                "/watches", json={"type": "trigger_run", "id": "r", "colour": 1}, headers=auth()
            )
            garbage = await client.post("/watches", content=b"{nope", headers=auth())
            too_long = await client.post(
                "/watches", json={**entry, "expire_after": "365d"}, headers=auth()
            )
            conflict = await client.post(
                "/watches", json={"type": "trigger_run", "id": "run_cfg"}, headers=auth()
            )
            # Its baseline first: a change before the first poll would be that baseline.
            assert env.daemon.watcher is not None
            registry = env.daemon.watcher.registry
            with anyio.fail_after(10):
                while registry["trigger_run:run_new"].last_ok_at is None:  # noqa: ASYNC110 - observing the first poll
                    await anyio.sleep(0.02)
            env.world.set_trigger_run("run_new", "FAILED", "bad deploy")
            events = await env.wait_until(
                lambda evs: any(e["subject_id"] == "run_new" for e in evs)
            )
            rows = {
                w["key"]: w
                for w in (await client.get("/watches", headers=auth())).json()["watches"]
            }
            remove_cfg = await client.delete("/watches/trigger_run/run_cfg", headers=auth())
            removed = await client.delete("/watches/trigger_run/run_new", headers=auth())
            gone = await client.delete("/watches/trigger_run/run_new", headers=auth())
            after = await client.get("/watches", headers=auth())
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert listing.status_code == 401
    assert created.status_code == 201
    assert created.json()["created"] is True
    assert created.json()["watch"]["origin"] == "api"
    assert created.json()["watch"]["expires_at"] > 1e9
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert escape.status_code == 422
    assert "id: invalid id '../etc'" in escape.json()["error"]
    assert unknown.status_code == 422
    assert "type: unknown value 'cron'" in unknown.json()["error"]
    assert typo.status_code == 422
    assert "colour: unknown key" in typo.json()["error"]
    assert garbage.status_code == 400
    assert too_long.status_code == 422
    assert "expire_after" in too_long.json()["error"]
    assert conflict.status_code == 409
    assert "config file" in conflict.json()["error"]
    failed = [e for e in events if e["subject_id"] == "run_new"]
    assert [(e["to_status"], e["watch"]["name"]) for e in failed] == [("FAILED", "from-the-app")]
    assert rows["trigger_run:run_new"]["origin"] == "api"
    assert remove_cfg.status_code == 409
    assert removed.status_code == 200
    assert gone.status_code == 404
    assert [w["key"] for w in after.json()["watches"]] == ["trigger_run:run_cfg"]


async def test_api_watches_survive_a_restart_and_expire(tmp_path: Path) -> None:
    world = World()
    world.add_trigger_run("run_keep", "t", "EXECUTING")
    world.add_trigger_run("run_brief", "t", "EXECUTING")
    state = tmp_path / "state.db"
    common: dict[str, Any] = {"world": world, "http": LOCAL, "settings": settings(world)}
    async with (
        running([], state_file=str(state), **common) as env,
        httpx.AsyncClient(base_url=api_url(env.daemon), headers=auth()) as client,
    ):
        keep = await client.post("/watches", json={"type": "trigger_run", "id": "run_keep"})
        brief = await client.post(
            "/watches",
            json={"type": "trigger_run", "id": "run_brief", "expire_after": "2s"},
        )
    assert (keep.status_code, brief.status_code) == (201, 201)
    async with (
        running([], state_file=str(state), **common) as env,
        httpx.AsyncClient(base_url=api_url(env.daemon), headers=auth()) as client,
    ):
        first = [w["key"] for w in (await client.get("/watches")).json()["watches"]]
        with anyio.fail_after(10):
            while "trigger_run:run_brief" in env.daemon.api_watches:  # noqa: ASYNC110 - observing
                await anyio.sleep(0.1)
        second = [w["key"] for w in (await client.get("/watches")).json()["watches"]]
        # The kept watch still notifies after the restart.
        world.set_trigger_run("run_keep", "COMPLETED")
        await env.wait_until(lambda evs: any(e["subject_id"] == "run_keep" for e in evs))
    assert first == ["trigger_run:run_brief", "trigger_run:run_keep"]
    assert second == ["trigger_run:run_keep"]


async def test_beyond_loopback_without_a_token_the_watch_api_is_off() -> None:
    world = World()
    async with running(
        [], world=world, http={"listen": "0.0.0.0:0"}, settings=settings(world, None)
    ) as env:
        assert env.daemon.http is not None
        url = f"http://127.0.0.1:{env.daemon.http.port}"
        async with httpx.AsyncClient(base_url=url) as client:
            health = await client.get("/healthz")
            add = await client.post("/watches", json={"type": "trigger_run", "id": "run_x"})
            listing = await client.get("/watches")
    assert health.status_code == 200
    assert add.status_code == 403
    assert "WATCHER_API_TOKEN" in add.json()["error"]
    assert listing.status_code == 403


async def test_readyz_is_503_until_every_watch_was_polled_once() -> None:
    world = World()
    world.add_trigger_run("run_slow", "t", "EXECUTING")
    sim = HttpServer(SimulatorApi(world))
    receiver = WebhookReceiver()
    async with anyio.create_task_group() as tg:
        await tg.start(sim.serve)
        await tg.start(receiver.server.serve)
        fault = world.add_fault(Fault("run_slow", kind="hang"))
        config = make_config(
            sim.url,
            [(receiver.apprise_url("json"), ["all"], "json")],
            watches=[{"type": "trigger_run", "id": "run_slow"}],
            http=LOCAL,
            sources={"trigger": {"base_url": sim.url, "reserve": 0, "total_timeout": "30s"}},
        )
        daemon = Daemon(config, settings(world))
        stopped = anyio.Event()

        async def run() -> None:
            await daemon.run(handle_signals=False)
            stopped.set()

        tg.start_soon(run)
        with anyio.fail_after(10):
            while daemon.http is None:  # noqa: ASYNC110 - observing the daemon start
                await anyio.sleep(0.02)
        async with httpx.AsyncClient(base_url=api_url(daemon)) as client:
            before = await client.get("/readyz")
            alive = await client.get("/healthz")
            world.clear_faults()
            with anyio.fail_after(40):
                await daemon.ready.wait()
            after = await client.get("/readyz")
        daemon.request_stop()
        with anyio.fail_after(15):
            await stopped.wait()
        tg.cancel_scope.cancel()
    assert fault.hits >= 1
    assert before.status_code == 503
    assert before.json()["reasons"] == ["not every watch polled once yet (1 pending)"]
    assert alive.status_code == 200
    assert after.status_code == 200


# -- systemd ---------------------------------------------------------------------------------


@asynccontextmanager
async def manager_socket(path: Path) -> AsyncIterator[anyio.abc.UNIXDatagramSocket]:
    async with await anyio.create_unix_datagram_socket(local_path=path) as sock:
        yield sock


async def next_message(sock: anyio.abc.UNIXDatagramSocket) -> dict[str, str]:
    with anyio.fail_after(15):
        data, _ = await sock.receive()
    return dict(line.split("=", 1) for line in data.decode().split("\n"))


async def test_sd_notify_ready_after_the_first_pass_watchdog_reload_stopping(
    tmp_path: Path,
) -> None:
    world = World()
    for i in range(5):
        world.add_trigger_run(f"run_{i}", "t", "EXECUTING")
    config_file = tmp_path / "watcher.yaml"
    path = tmp_path / "notify.sock"
    async with manager_socket(path) as sock:
        notifier = SystemdNotifier(str(path), watchdog=0.1)
        watches = [{"type": "trigger_run", "id": f"run_{i}"} for i in range(5)]
        async with running(
            watches, world=world, daemon_options={"systemd": notifier, "config_path": config_file}
        ) as env:
            messages = []
            while "READY" not in (m := await next_message(sock)):
                messages.append(m)
            ready = m
            assert env.daemon.watcher is not None
            polls_at_ready = {k: rt.polls for k, rt in env.daemon.watcher.registry.items()}
            pings = 0
            with anyio.fail_after(5):
                while pings < 5:
                    if (await next_message(sock)).get("WATCHDOG") == "1":
                        pings += 1
            # A reload: the file holds the same watches and notifier.
            config_file.write_text(
                json.dumps(
                    {
                        "sources": {
                            "trigger": {"base_url": env.sim.url},
                            "parallel": {"base_url": env.sim.url},
                        },
                        "watches": watches,
                        "notifiers": [{"url": env.receiver.apprise_url("json"), "tags": ["all"]}],
                    }
                )
            )
            assert await env.daemon.reload_from_file()
            seen: list[dict[str, str]] = []
            while not seen or "READY" not in seen[-1]:
                seen.append(await next_message(sock))
            reload_messages = [m for m in seen if "RELOADING" in m or "READY" in m]
        stopping = []
        while True:
            try:
                with anyio.fail_after(2):
                    data, _ = await sock.receive()
            except TimeoutError:
                break
            stopping.append(data.decode())
        notifier.close()
    assert ready["READY"] == "1"
    assert ready["STATUS"] == "watching 5, 0 erroring, 0 notifications queued"
    assert all(n >= 1 for n in polls_at_ready.values())
    assert not any("READY" in m for m in messages)
    assert "RELOADING" in reload_messages[0]
    assert int(reload_messages[0]["MONOTONIC_USEC"]) > 0
    assert reload_messages[-1]["READY"] == "1"
    assert any("STOPPING=1" in m for m in stopping)


async def test_a_slow_first_pass_extends_the_start_timeout_and_shows_progress(
    tmp_path: Path,
) -> None:
    world = World()
    for i in range(4):
        world.add_trigger_run(f"run_{i}", "t", "EXECUTING")
    path = tmp_path / "notify.sock"
    async with manager_socket(path) as sock:
        notifier = SystemdNotifier(str(path), watchdog=0.2)
        # Two polls a second after one: the budget paces the first pass over ~2 s.
        async with running(
            [{"type": "trigger_run", "id": f"run_{i}"} for i in range(4)],
            world=world,
            sources={"trigger": {"requests_per_minute": 120, "burst": 1}},
            daemon_options={"systemd": notifier},
        ):
            before_ready = []
            while "READY" not in (m := await next_message(sock)):
                before_ready.append(m)
        notifier.close()
    assert before_ready
    assert all(int(m["EXTEND_TIMEOUT_USEC"]) > 0 for m in before_ready)
    assert any(m["STATUS"].startswith("first pass: ") for m in before_ready)
    assert "EXTEND_TIMEOUT_USEC" not in m


# -- sharding --------------------------------------------------------------------------------


async def test_two_shards_partition_the_watches_and_notify_each_transition_once() -> None:
    world = World()
    ids = [f"run_{i:02d}" for i in range(16)]
    for run_id in ids:
        world.add_trigger_run(run_id, "t", "EXECUTING")
    watches: list[dict[str, Any]] = [{"type": "trigger_run", "id": run_id} for run_id in ids]
    watches.append({"type": "trigger_runs", "id": "failures", "filter": {"task": ["batch"]}})
    # Both shards share one key and so one limit; this test is about the partition.
    sim = HttpServer(SimulatorApi(world, limiter=TriggerLimiter(10_000, 1.0, 10_000)))
    receiver = WebhookReceiver()
    async with anyio.create_task_group() as tg:
        await tg.start(sim.serve)
        await tg.start(receiver.server.serve)
        daemons = [
            Daemon(
                make_config(
                    sim.url,
                    [(receiver.apprise_url("json"), ["all"], "json")],
                    watches=watches,
                    shard={"index": index, "count": 2},
                    sources={
                        "trigger": {
                            "base_url": sim.url,
                            "requests_per_minute": 12_000,
                            "burst": 400,
                        }
                    },
                ),
                settings(world),
            )
            for index in range(2)
        ]
        async with run_daemon(daemons[0]), run_daemon(daemons[1]):
            owned = [
                {k for k, rt in d.watcher.registry.items() if rt.parent is None}
                for d in daemons
                if d.watcher is not None
            ]
            for run_id in ids:
                world.set_trigger_run(run_id, "FAILED", "x")
            # New failed runs: discovered by both shards' listings, followed by one each.
            for i in range(6):
                world.add_trigger_run(f"run_new_{i}", "batch", "FAILED")
            received = await _wait_count(receiver, len(ids) + 6)
            for d in daemons:  # nothing more may come
                await settled(d)
            received = receiver.events()
            followed = [
                {rt.subject_id for rt in d.watcher.registry.values() if rt.parent}
                for d in daemons
                if d.watcher is not None
            ]
        tg.cancel_scope.cancel()
    watch_keys = {f"trigger_run:{run_id}" for run_id in ids}
    assert owned[0] & owned[1] == {"trigger_runs:failures"}
    assert (owned[0] | owned[1]) - {"trigger_runs:failures"} == watch_keys
    assert owned[0] - {"trigger_runs:failures"}, "shard 0 got no watch"
    assert owned[1] - {"trigger_runs:failures"}, "shard 1 got no watch"
    assert not followed[0] & followed[1]
    assert followed[0] | followed[1] == {f"run_new_{i}" for i in range(6)}
    subjects = [e["subject_id"] for e in received]
    assert sorted(subjects) == sorted([*ids, *(f"run_new_{i}" for i in range(6))])


async def _wait_count(receiver: WebhookReceiver, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(20):
        await receiver.wait_until(lambda got: sum(len(r.events) for r in got) >= count)
    return receiver.events()


# -- silences at run time --------------------------------------------------------------------


async def test_silences_added_at_run_time_hold_back_events_persist_and_end(
    tmp_path: Path,
) -> None:
    world = World()
    for run_id in ("run_web", "run_data", "run_late"):
        world.add_trigger_run(run_id, "t", "EXECUTING")
    watches = [
        {"type": "trigger_run", "id": "run_web", "labels": {"team": "web"}},
        {"type": "trigger_run", "id": "run_data", "labels": {"team": "data"}},
        {"type": "trigger_run", "id": "run_late", "labels": {"team": "web"}},
    ]
    state = tmp_path / "state.db"
    common: dict[str, Any] = {
        "world": world,
        "http": LOCAL,
        "settings": settings(world),
        "state_file": str(state),
    }
    # Long enough to outlive a restart on a loaded machine, short enough to watch it end.
    body = {"match": {"labels.team": "web"}, "duration": "8s", "comment": "deploying web"}
    async with (
        running(watches, **common) as env,
        httpx.AsyncClient(base_url=api_url(env.daemon), headers=auth()) as client,
    ):
        no_end = await client.post("/silences", json={"match": {"severity": "failure"}})
        bad_field = await client.post(
            "/silences", json={"match": {"colour": "red"}, "duration": "1h"}
        )
        added = await client.post("/silences", json=body)
        ident = added.json()["silence"]["id"]
        listed = (await client.get("/silences")).json()["silences"]
        world.set_trigger_run("run_web", "FAILED", "silenced")
        world.set_trigger_run("run_data", "FAILED", "not silenced")
        await env.wait_until(lambda evs: any(e["subject_id"] == "run_data" for e in evs))
        await settled(env.daemon)
        parsed = samples((await client.get("/metrics")).text)
    assert no_end.status_code == 422
    assert "must end" in no_end.json()["error"]
    assert bad_field.status_code == 422
    assert added.status_code == 201
    assert ident.startswith("sil_")
    assert [(s["id"], s["origin"], s["active"]) for s in listed] == [(ident, "api", True)]
    assert [e["subject_id"] for e in env.receiver.events()] == ["run_data"]
    assert total(parsed, "run_watcher_events_silenced_total") == 1
    # After a restart the silence still holds, until it ends on its own.
    async with (
        running(watches, **common) as env,
        httpx.AsyncClient(base_url=api_url(env.daemon), headers=auth()) as client,
    ):
        kept = [s["id"] for s in (await client.get("/silences")).json()["silences"]]
        with anyio.fail_after(20):
            while env.daemon.overrides.silences:  # noqa: ASYNC110 - observing the expiry
                await anyio.sleep(0.1)
        world.set_trigger_run("run_late", "FAILED", "after the silence")
        await env.wait_until(lambda evs: any(e["subject_id"] == "run_late" for e in evs))
        again = await client.post("/silences", json=body)
        second = again.json()["silence"]["id"]
        lifted = await client.delete(f"/silences/{second}")
        missing = await client.delete(f"/silences/{second}")
    assert kept == [ident]
    assert lifted.status_code == 200
    assert missing.status_code == 404


async def test_watch_api_false_leaves_reads_and_turns_off_changes() -> None:
    world = World()
    async with (
        running(
            [],
            world=world,
            http={"listen": "127.0.0.1:0", "watch_api": False},
            settings=settings(world),
        ) as env,
        httpx.AsyncClient(base_url=api_url(env.daemon), headers=auth()) as client,
    ):
        listing = await client.get("/watches")
        add = await client.post("/watches", json={"type": "trigger_run", "id": "run_x"})
        silence = await client.post("/silences", json={"match": {}, "duration": "1h"})
        reload = await client.post("/-/reload")
    assert listing.status_code == 200
    assert [add.status_code, silence.status_code, reload.status_code] == [403, 403, 403]
    assert "http.watch_api: false" in add.json()["error"]
