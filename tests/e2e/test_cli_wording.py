"""The commands say the same thing the same way: ``once`` uses the words of ``status``
and of the log, and ``run`` names a bad file as ``check-config`` does."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from cli_harness import CLI, clean_env, simulator_and_receiver, write

from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


async def test_once_says_finished_and_why_a_watch_cannot_see(tmp_path: Path) -> None:
    world = World()
    world.add_trigger_run("run_done", "send-invoice", "FAILED")
    world.add_group("tgrp_locked", 3, status="running")
    config = write(
        tmp_path,
        {
            "watches": [
                {"type": "trigger_run", "id": "run_done"},
                {"type": "parallel_task_group", "id": "tgrp_locked"},
            ],
            "notifiers": [{"url": "json://127.0.0.1:9/hook"}],
        },
    )
    async with simulator_and_receiver(world) as (sim, _):
        env = clean_env(
            PARALLEL_BASE_URL=sim.url,
            TRIGGER_API_URL=sim.url,
            PARALLEL_API_KEY="not-the-key",
            TRIGGER_SECRET_KEY=world.trigger_key,
        )
        done = await anyio.run_process(
            [*CLI, "once", "--config", str(config)], env=env, check=False
        )
    out = done.stdout.decode()
    assert done.returncode == 1, out + done.stderr.decode()
    rows = {line.split()[0]: line for line in out.splitlines() if ":" in line.split()[0]}
    assert rows["trigger_run:run_done"].split()[2:4] == ["finished", "FAILED"]
    locked = rows["parallel_task_group:tgrp_locked"]
    assert "error" in locked
    assert "cannot see: auth_failed" in locked
    assert "not seen yet" not in out


async def test_run_names_a_bad_file_as_check_config_does(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        {
            "watches": [{"type": "trigger_run", "id": "run_a"}],
            "notifiers": [{"url": "nope://x"}],
        },
    )
    env = clean_env(TRIGGER_SECRET_KEY="tr_dev_x")
    said = []
    for command in ("check-config", "run"):
        done = await anyio.run_process(
            [*CLI, command, "--config", str(config)], env=env, check=False
        )
        assert done.returncode == 2
        said.append(done.stderr.decode())
    assert said[0] == said[1]
    assert f"{config}: notifiers[0].url: not a valid apprise URL" in said[1]
    assert "config:" not in said[1]
