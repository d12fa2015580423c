"""The CLI and the native notifiers: bad keys and tokens named before any request,
refusals reported by ``test-notify``, ``incidents`` and ``ack`` against a daemon."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from cli_harness import CLI, free_port, sim_env, simulator_and_receiver, write

from watcher.simulator.api import SimulatorApi
from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

KEY = "R0123456789ABCDEF0123456789ABCDE"


async def test_check_config_names_a_bad_routing_key_or_token(tmp_path: Path) -> None:
    world = World()
    async with simulator_and_receiver(world) as (sim, _):
        config = write(
            tmp_path,
            {
                "notifiers": [
                    {"name": "pd", "pagerduty": {"routing_key": "short"}},
                    {"name": "pd-env", "pagerduty": {"routing_key_env": "PD_KEY_UNSET"}},
                    {"name": "bot", "slack": {"token": "xoxp-user-token-secret", "channel": "#x"}},
                    {"name": "none", "slack": {"channel": "#x"}},
                ]
            },
        )
        proc = await anyio.run_process(
            [*CLI, "check-config"], env=sim_env(sim, world, config), check=False
        )
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "notifiers[3]" in err
    assert "token, token_env, token_file" in err
    # The loader reports the first layer of problems: the schema's, then the secrets'.
    fixed = write(
        tmp_path,
        {
            "notifiers": [
                {"name": "pd", "pagerduty": {"routing_key": "short"}},
                {"name": "pd-env", "pagerduty": {"routing_key_env": "PD_KEY_UNSET"}},
                {"name": "bot", "slack": {"token": "xoxp-user-token-secret", "channel": "#x"}},
            ]
        },
    )
    async with simulator_and_receiver(world) as (sim, _):
        proc = await anyio.run_process(
            [*CLI, "check-config"], env=sim_env(sim, world, fixed), check=False
        )
    err = proc.stderr.decode()
    assert proc.returncode == 2
    assert "notifiers[0].pagerduty: a routing key is the 32-character" in err
    assert (
        "notifiers[1].pagerduty: routing_key_env: environment variable PD_KEY_UNSET is not set"
        in err
    )
    assert "notifiers[2].slack: a bot token starts with xoxb-" in err
    assert "xoxp-user-token-secret" not in err


async def test_test_notify_reaches_pagerduty_and_slack_and_reports_a_refused_token(
    tmp_path: Path,
) -> None:
    world = World()
    async with simulator_and_receiver(world) as (sim, _):
        api = sim.handler
        assert isinstance(api, SimulatorApi)
        config = write(
            tmp_path,
            {
                "notifiers": [
                    {
                        "name": "pd",
                        "pagerduty": {"routing_key_env": "PD_KEY", "url": f"{sim.url}/pagerduty"},
                    },
                    {
                        "name": "bot",
                        "slack": {
                            "token": "xoxb-sim-token",
                            "channel": "#incidents",
                            "base_url": f"{sim.url}/slack/api/",
                        },
                    },
                    {
                        "name": "wrong-bot",
                        "slack": {
                            "token": "xoxb-revoked-secret",
                            "channel": "#incidents",
                            "base_url": f"{sim.url}/slack/api/",
                        },
                    },
                ]
            },
        )
        env = sim_env(sim, world, config) | {"PD_KEY": KEY}
        proc = await anyio.run_process([*CLI, "test-notify"], env=env, check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 1
    assert "ok   pd" in out
    assert "ok   bot" in out
    assert "FAIL wrong-bot" in out
    assert "invalid_auth" in out
    assert "xoxb-revoked-secret" not in out + proc.stderr.decode()
    # The test page opened and closed at once; the post arrived.
    (page,) = api.pagerduty.alerts.values()
    assert (page["status"], page["triggers"], page["resolves"]) == ("resolved", 1, 1)
    assert api.pagerduty.accepted[0]["payload"]["severity"] == "info"
    (posted,) = api.slack.top_level().values()
    assert "[TEST] run-watcher test notification" in str(posted["text"])


async def test_incidents_and_ack_through_the_cli(tmp_path: Path) -> None:
    world = World()
    world.add_group("tgrp_cli", 2)
    port = free_port()
    async with simulator_and_receiver(world) as (sim, receiver):
        config = write(
            tmp_path,
            {
                "watches": [{"type": "parallel_task_group", "id": "tgrp_cli", "name": "nightly"}],
                "polling": {"min_interval": "100ms", "max_interval": "300ms"},
                "notifiers": [{"url": receiver.apprise_url("json"), "format": "json"}],
                "notifications": {"group_wait": "0s", "group_interval": "0s"},
                "http": {"listen": f"127.0.0.1:{port}"},
            },
        )
        env = sim_env(sim, world, config)
        async with await anyio.open_process([*CLI, "run"], env=env) as daemon:
            try:
                with anyio.fail_after(20):
                    while True:
                        ready = await anyio.run_process(
                            [*CLI, "health", "--ready"], env=env, check=False
                        )
                        if ready.returncode == 0:
                            break
                        await anyio.sleep(0.1)
                world.progress_group("tgrp_cli", 1, "failed", "boom")
                with anyio.fail_after(15):
                    await receiver.wait_until(
                        lambda rs: any(
                            e["kind"] == "group.runs_failed" for r in rs for e in r.events
                        )
                    )
                listed = await anyio.run_process([*CLI, "incidents", "--open"], env=env)
                table = listed.stdout.decode()
                ident = next(w for w in table.split() if w.startswith("inc_"))
                acked = await anyio.run_process(
                    [*CLI, "ack", ident[:9], "--by", "ana", "--note", "on it"], env=env
                )
                again = await anyio.run_process(
                    [*CLI, "ack", "inc_0000ffff", "--by", "x"], env=env, check=False
                )
                after = await anyio.run_process([*CLI, "incidents", "--json"], env=env)
            finally:
                daemon.terminate()
                await daemon.wait()
    assert "open" in table
    assert "nightly: failing" in table
    assert f"{ident}: acknowledged by ana" in acked.stdout.decode()
    assert again.returncode == 1
    assert "no open incident 'inc_0000ffff'" in again.stderr.decode()
    assert '"state": "acknowledged"' in after.stdout.decode()
    kinds = [e["kind"] for e in receiver.events()]
    assert "incident.acknowledged" in kinds
