"""Incidents end to end: the daemon, the simulator's PagerDuty and Slack fakes, the
official slack-sdk, a webhook receiver; acknowledged over the HTTP API.

A failed run in a group opens one incident: one PagerDuty trigger and one Slack
message. Acknowledging it edits the message and acknowledges the page; the group's
end resolves the same dedup key and edits the same message again, each later event a
reply in its thread. Neither fake refused a request: both check every one against
their API's schema.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cli_harness import free_port
from harness import make_config, run_daemon

from watcher.config.model import WatcherConfig
from watcher.config.settings import Settings
from watcher.daemon.app import Daemon
from watcher.http_server import HttpServer
from watcher.simulator.api import SimulatorApi
from watcher.simulator.pagerduty import PagerDutyFake
from watcher.simulator.receiver import WebhookReceiver
from watcher.simulator.slack import SlackFake
from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

KEY = "R0123456789ABCDEF0123456789ABCDE"
WATCHES = [{"type": "parallel_task_group", "id": "tgrp_inc", "name": "nightly"}]


def notifiers(sim_url: str, receiver: WebhookReceiver) -> list[dict[str, Any]]:
    return [
        {
            "name": "pager",
            "tags": ["page"],
            "pagerduty": {"routing_key": KEY, "url": f"{sim_url}/pagerduty"},
        },
        {
            "name": "slack-oncall",
            "tags": ["chat"],
            "slack": {
                "token": "xoxb-sim-token",
                "channel": "#incidents",
                "base_url": f"{sim_url}/slack/api/",
            },
        },
        {"name": "audit", "url": receiver.apprise_url("json"), "tags": ["audit"], "format": "json"},
    ]


# Everything to every notifier: a failing group's progress is news of its incident
# (replies in its thread, no page), not posts of their own.
ROUTES = [{"match": {}, "notify": ["page", "chat", "audit"]}]


async def until(check: Callable[[], bool], within: float = 15.0) -> None:
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110 - observing the fakes' state
            await anyio.sleep(0.02)


@asynccontextmanager
async def incident_stage(
    world: World, **sections: Any
) -> AsyncIterator[tuple[PagerDutyFake, SlackFake, WatcherConfig, Settings]]:
    """The simulator (with its PagerDuty and Slack fakes) and a receiver on loopback; the
    fakes, and the config and settings of a daemon that pages and posts through them."""
    sim = HttpServer(SimulatorApi(world))
    receiver = WebhookReceiver()
    async with anyio.create_task_group() as tg:
        await tg.start(sim.serve)
        await tg.start(receiver.server.serve)
        config = make_config(
            sim.url, notifiers(sim.url, receiver), watches=WATCHES, routes=ROUTES, **sections
        )
        settings = Settings(
            parallel_api_key=world.parallel_key, trigger_secret_key=world.trigger_key
        )
        yield (*fakes(sim), config, settings)
        tg.cancel_scope.cancel()


def fakes(sim: HttpServer) -> tuple[PagerDutyFake, SlackFake]:
    api = sim.handler
    assert isinstance(api, SimulatorApi)
    return api.pagerduty, api.slack


def alert(pd: PagerDutyFake) -> dict[str, Any]:
    (found,) = pd.alerts.values()
    return found


def headers(slack: SlackFake) -> list[str]:
    return [
        str(m["blocks"][0]["text"]["text"]) if m["blocks"] else str(m["text"])
        for m in slack.top_level().values()
    ]


def no_refusals(pd: PagerDutyFake, slack: SlackFake, *expected: str) -> None:
    """Neither fake refused a request but for what the test provoked."""
    assert [r for r in pd.rejected if r[1] != ["injected"]] == []
    assert [r for r in slack.refused if r[1] not in {"ratelimited", *expected}] == []


async def test_a_group_failure_is_one_page_and_one_slack_message_through_its_life() -> None:
    world = World()
    world.add_group("tgrp_inc", 3)
    port = free_port()
    async with (
        incident_stage(world, http={"listen": f"127.0.0.1:{port}"}) as (
            pd,
            slack,
            config,
            settings,
        ),
        run_daemon(Daemon(config, settings)) as daemon,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        (failed,) = world.progress_group("tgrp_inc", 1, "failed", "upstream site timed out")
        await until(lambda: len(pd.alerts) == 1 and len(slack.top_level()) == 1)
        page = alert(pd)
        assert (page["status"], page["triggers"]) == ("triggered", 1)
        assert headers(slack)[0].startswith("FAILING")
        (listed,) = (await http.get("/incidents", params={"open": "true"})).json()["incidents"]
        ident = listed["id"]
        assert [d for (_, d) in pd.alerts] == [ident]
        assert listed["state"] == "open"

        answer = await http.post(
            f"/incidents/{ident[:10]}/ack", json={"by": "ana", "note": "looking"}
        )
        assert answer.status_code == 200, answer.text
        await until(lambda: alert(pd)["status"] == "acknowledged")
        await until(lambda: headers(slack)[0].startswith("ACKNOWLEDGED by ana"))
        metrics = (await http.get("/metrics")).text
        assert 'run_watcher_incidents{state="acknowledged"} 1.0' in metrics
        assert 'run_watcher_incidents{state="open"} 0.0' in metrics

        world.progress_group("tgrp_inc", 2, "completed")
        await until(lambda: alert(pd)["status"] == "resolved")
        await until(lambda: headers(slack)[0].startswith("RESOLVED after"))
        gone = await http.post(f"/incidents/{ident}/ack", json={"by": "ana"})
        assert gone.status_code == 409
        assert "is resolved" in gone.json()["error"]
        assert (await http.get("/incidents/inc_ffffffff")).status_code == 404
        assert daemon.dispatcher.conditions.open == {}

    page = alert(pd)
    assert (page["triggers"], page["acks"], page["resolves"]) == (1, 1, 1)
    assert len(pd.accepted) == 3
    assert {b["dedup_key"] for b in pd.accepted} == {ident}
    trigger = pd.accepted[0]
    assert trigger["payload"]["custom_details"]["subject"] == failed
    assert trigger["payload"]["custom_details"]["error"] == "upstream site timed out"
    ((channel, ts),) = slack.top_level()
    assert channel == "C0SIMINC01"  # the id Slack answered with, not "#incidents"
    message = slack.messages[(channel, ts)]
    assert message["edits"] >= 2
    posted = [a for m, a in slack.calls if m == "chat.postMessage" and "thread_ts" not in a]
    assert len(posted) == 1, "one message per incident, never re-posted"
    replies = [str(m["text"]) for m in slack.replies(ts)]
    assert any(r.startswith("Acknowledged by *ana*: looking") for r in replies)
    assert any(r.startswith("Resolved after") for r in replies)
    assert any(r.startswith("[PROGRESS] nightly") for r in replies)
    assert any(r.startswith("[FINISHED] nightly") for r in replies)
    no_refusals(pd, slack)


async def test_a_restart_keeps_editing_the_same_message_and_rate_limits_are_waited_out(
    tmp_path: Path,
) -> None:
    world = World()
    world.add_group("tgrp_inc", 3)
    state = tmp_path / "state.db"
    async with incident_stage(world, state_file=str(state), http={"listen": "off"}) as (
        pd,
        slack,
        config,
        settings,
    ):
        # Each fake refuses its first requests for their rate: both are waited out.
        pd.failures.extend([429, 429])
        slack.failures.append({"error": "ratelimited", "retry_after": 1})
        async with run_daemon(Daemon(config, settings)):
            # An upstream that echoes the API key in an error: no notifier gets it.
            world.progress_group("tgrp_inc", 1, "failed", f"boom (key {world.parallel_key})")
            await until(lambda: len(pd.alerts) == 1 and len(slack.top_level()) == 1)
        first = set(slack.top_level())
        assert [s for s, _ in pd.rejected] == [429, 429]
        assert ("chat.postMessage", "ratelimited") in slack.refused

        async with run_daemon(Daemon(config, settings)) as daemon:
            (incident,) = daemon.dispatcher.incidents(open_only=True)
            await daemon.dispatcher.acknowledge(incident["id"], "bo")
            ((channel, ts),) = first
            await until(
                lambda: any(str(r["text"]).startswith("Acknowledged by") for r in slack.replies(ts))
            )
            assert headers(slack)[0].startswith("ACKNOWLEDGED by bo")
            # Someone deleted the message: the next edit posts a new one and goes on.
            slack.messages.pop((channel, ts))
            world.progress_group("tgrp_inc", 2, "completed")
            await until(lambda: alert(pd)["status"] == "resolved")
            await until(lambda: any(h.startswith("RESOLVED") for h in headers(slack)))

    posted = [a for m, a in slack.calls if m == "chat.postMessage" and "thread_ts" not in a]
    # The first daemon posted once (its ratelimited try repeated nothing); the restart
    # edited that message (no new post) until it was deleted: then one new post.
    assert len(posted) == 3  # the ratelimited attempt, the post, the re-post
    updates = [a for m, a in slack.calls if m == "chat.update"]
    assert updates[0]["ts"] == next(iter(first))[1]
    page = alert(pd)
    assert (page["triggers"], page["acks"], page["resolves"]) == (1, 1, 1)
    no_refusals(pd, slack, "message_not_found")
    sent = json.dumps(slack.state()) + json.dumps(pd.requests)
    assert "boom (key " in sent
    assert world.parallel_key not in sent
