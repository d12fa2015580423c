"""Secrets and customer data never reach a log line or a notification."""

from __future__ import annotations

import io
import json
import logging

import anyio
import pytest
from anyio.abc import TaskStatus
from harness import make_config, settled

from watcher.config.settings import Settings
from watcher.daemon.app import Daemon
from watcher.daemon.logging import configure_logging
from watcher.http_server import HttpServer
from watcher.simulator.api import SimulatorApi
from watcher.simulator.receiver import WebhookReceiver
from watcher.simulator.world import Fault, World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

PARALLEL_KEY = "pk-SECRET-PARALLEL-123456"
TRIGGER_KEY = "tr_prod_SECRETTRIGGER987"
NOTIFIER_PASSWORD = "NOTIFIER-PASSWORD-777"
SECRETS = [PARALLEL_KEY, TRIGGER_KEY, NOTIFIER_PASSWORD]
CUSTOMER_DATA = [
    "jane@example.com",
    "4242424242424242",
    "INV-SECRET-OUTPUT",
    "secret-customer-data",
]


async def test_no_secret_in_logs_or_notifications() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    world = World(parallel_key=PARALLEL_KEY, trigger_key=TRIGGER_KEY)
    world.add_group("tgrp_s", 2, status="running")
    world.add_trigger_run("run_s", "charge", "EXECUTING")
    receiver = WebhookReceiver()
    sim = HttpServer(SimulatorApi(world))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(sim.serve)
            await tg.start(receiver.server.serve)
            url = f"json://hookuser:{NOTIFIER_PASSWORD}@127.0.0.1:{receiver.server.port}/hook"
            text_url = f"json://hookuser:{NOTIFIER_PASSWORD}@127.0.0.1:{receiver.server.port}/text"
            config = make_config(
                sim.url,
                [(url, ["all"], "json"), (text_url, ["all"], "text")],
                watches=[
                    {"type": "parallel_task_group", "id": "tgrp_s"},
                    {"type": "trigger_run", "id": "run_s"},
                    {"type": "trigger_runs", "id": "all-runs", "filter": {"task": ["charge"]}},
                ],
            )
            daemon = Daemon(
                config, Settings(parallel_api_key=PARALLEL_KEY, trigger_secret_key=TRIGGER_KEY)
            )
            done = anyio.Event()

            async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                await daemon.run(handle_signals=False, task_status=task_status)
                done.set()

            await tg.start(run)
            await daemon.ready.wait()
            # A careless upstream echoes the credential in its error body.
            world.add_fault(
                Fault(
                    match="/tasks/groups/tgrp_s",
                    status=500,
                    body=json.dumps({"error": f"bad key {PARALLEL_KEY}"}).encode(),
                )
            )
            world.add_fault(
                Fault(
                    match="/api/v3/runs/run_s",
                    status=401,
                    body=json.dumps({"error": f"Invalid key {TRIGGER_KEY}"}).encode(),
                )
            )
            with anyio.fail_after(20):
                await receiver.wait_until(
                    lambda rs: sum(1 for r in rs if "watch.error" in r.message) >= 2
                )
            world.clear_faults()
            world.set_trigger_run("run_s", "FAILED", "card declined")
            world.progress_group("tgrp_s", 1, "failed", "bad input")
            with anyio.fail_after(20):
                await receiver.wait_until(
                    lambda rs: any("run_s" in r.message and "FAILED" in r.message for r in rs)
                )
            await settled(daemon)
            daemon.request_stop()
            await done.wait()
            tg.cancel_scope.cancel()
    finally:
        logging.getLogger().handlers.clear()

    logs = stream.getvalue()
    assert "poll failed" in logs  # the errors were logged ...
    assert "***" in logs  # ... with the echoed key masked
    notifications = "\n".join(r.body.decode() + json.dumps(r.headers) for r in receiver.received)
    assert "***" in notifications
    for secret in SECRETS:
        assert secret not in logs, f"{secret} leaked into the log"
    for secret in [PARALLEL_KEY, TRIGGER_KEY]:
        assert secret not in notifications, f"{secret} leaked into a notification"
    for value in CUSTOMER_DATA:
        assert value not in notifications, f"customer data {value} leaked into a notification"
        assert value not in logs
