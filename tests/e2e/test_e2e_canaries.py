"""Canary secrets in every upstream answer and notifier URL, searched in every output.

The daemon runs as a user runs it (``run-watcher run``, a subprocess with its HTTP
endpoints on); both upstreams echo the credential they were sent in every error body;
notifier URLs carry a password and a token. Then every output a person or a scraper
sees is read: the daemon's log, its HTTP answers (watches, metrics, probes), the
notifications, and the CLI (``status``, ``once``, ``check-config``, ``test-notify``,
``routes show``). No canary may appear in any of them, and the failures must still be
explained.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest
from cli_harness import CLI, clean_env, free_port, simulator_and_receiver, write

from watcher.simulator.world import Fault, World

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PARALLEL_KEY = "pk-CANARY-PARALLEL-5f1e0c"
TRIGGER_KEY = "tr_prod_CANARY_TRIGGER_9a7b"
PASSWORD = "CANARY-SMTP-PASSWORD-31"
HOOK_TOKEN = "CANARYHOOKTOKEN4242"
CANARIES = [PARALLEL_KEY, TRIGGER_KEY, PASSWORD, HOOK_TOKEN]


def echoing_faults(world: World) -> None:
    """Every upstream error body quotes the credential the request carried."""
    world.add_fault(
        Fault(
            match="/tasks/groups/tgrp_canary",
            status=401,
            body=json.dumps(
                {
                    "type": "error",
                    "error": {"ref_id": "r", "message": f"Invalid key {PARALLEL_KEY}"},
                }
            ).encode(),
        )
    )
    # The realtime feed echoes it too: it fails, falls back, and the run is polled.
    world.add_fault(
        Fault(
            match="/realtime/v1/runs",
            status=500,
            body=json.dumps({"error": f"Bearer {TRIGGER_KEY} has no realtime"}).encode(),
        )
    )
    world.add_fault(
        Fault(
            match="/api/v3/runs/run_canary",
            status=500,
            body=json.dumps({"error": f"Bearer {TRIGGER_KEY} is not allowed here"}).encode(),
        )
    )


async def test_no_canary_in_any_output(tmp_path: Path) -> None:
    world = World(parallel_key=PARALLEL_KEY, trigger_key=TRIGGER_KEY)
    world.add_group("tgrp_canary", 2, status="running")
    world.add_trigger_run("run_canary", "charge", "EXECUTING")
    # Bound and never listening: connections are refused, and no other server of this
    # test can be handed the port.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = free_port()
    async with simulator_and_receiver(world) as (sim, receiver):
        good = f"json://hook:{PASSWORD}@127.0.0.1:{receiver.server.port}/hook/{HOOK_TOKEN}"
        # Nothing listens there: the notifier fails, and must say why without its URL.
        dead = f"json://hook:{PASSWORD}@127.0.0.1:{closed.getsockname()[1]}/dead/{HOOK_TOKEN}"
        config = write(
            tmp_path,
            {
                "polling": {"min_interval": "200ms", "max_interval": "1s", "error_threshold": 1},
                "http": {"listen": f"127.0.0.1:{port}"},
                "watches": [
                    {"type": "parallel_task_group", "id": "tgrp_canary"},
                    {"type": "trigger_run", "id": "run_canary"},
                ],
                "notifiers": [
                    {"url": good, "tags": ["all"], "format": "json"},
                    {"url": dead, "tags": ["all"]},
                ],
                "delivery": {"max_attempts": 2, "initial_backoff": "50ms", "max_backoff": "100ms"},
                "notifications": {"group_wait": "0s", "group_interval": "0s"},
            },
        )
        env = clean_env(
            PARALLEL_API_KEY=PARALLEL_KEY,
            PARALLEL_BASE_URL=sim.url,
            TRIGGER_SECRET_KEY=TRIGGER_KEY,
            TRIGGER_API_URL=sim.url,
            WATCHER_CONFIG=str(config),
        )
        echoing_faults(world)
        outputs: dict[str, str] = {}
        async with await anyio.open_process(
            [*CLI, "run", "--log-format", "json", "--log-level", "debug"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ) as daemon:
            assert daemon.stdout is not None
            log = bytearray()

            async def drain() -> None:
                assert daemon.stdout is not None
                async for chunk in daemon.stdout:
                    log.extend(chunk)

            async with anyio.create_task_group() as tg:
                tg.start_soon(drain)
                with anyio.fail_after(30):
                    await receiver.wait_until(
                        lambda rs: (
                            sum(1 for r in rs for e in r.events if e["kind"] == "watch.error") >= 2
                        )
                    )
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                    for path in ("/watches", "/metrics", "/healthz", "/readyz"):
                        outputs[f"GET {path}"] = (await http.get(path)).text
                for command in (
                    ["status"],
                    ["once"],
                    ["check-config"],
                    ["test-notify"],
                    ["routes", "show"],
                ):
                    done = await anyio.run_process([*CLI, *command], env=env, check=False)
                    outputs[" ".join(command)] = done.stdout.decode() + done.stderr.decode()
                daemon.terminate()
                with anyio.fail_after(20):
                    await daemon.wait()
                tg.cancel_scope.cancel()
        outputs["daemon log"] = log.decode()
    closed.close()
    # What the notifications say (their own URL and auth header are the delivery itself).
    outputs["notifications"] = "\n".join(r.body.decode() for r in receiver.received)

    for where, text in outputs.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary} leaked into {where}:\n{text[:3000]}"
    # The failures are still explained, with the echoed key masked.
    watches = json.loads(outputs["GET /watches"])["watches"]
    problems = {w["key"]: w.get("problem") or {} for w in watches}
    assert "Invalid key ***" in json.dumps(problems["parallel_task_group:tgrp_canary"])
    assert "***" in outputs["status"]
    assert "HTTP 401" in outputs["once"]
    assert "Invalid key ***" in outputs["once"]
    # The dead notifier: named readably, and the reason apprise gave.
    assert "Connection refused" in outputs["test-notify"]
    assert f"127.0.0.1:{receiver.server.port}/hook" in outputs["test-notify"]
    assert "Connection refused" in outputs["daemon log"]
