"""kill -9 while transitions happen and the notifier is down: every transition at least
once, nothing twice but an in-flight message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest
import yaml
from anyio.abc import Process

from watcher.core.statuses import TRIGGER_CURRENT_API_VERSION
from watcher.http_server import HttpServer
from watcher.simulator.api import SimulatorApi
from watcher.simulator.receiver import WebhookReceiver
from watcher.simulator.trigger_runs import public_status
from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

RUNS = [f"run_k{i:02d}" for i in range(24)]


async def start(config: Path, env: dict[str, str]) -> tuple[Process, list[bytes]]:
    proc = await anyio.open_process(
        [sys.executable, "-m", "watcher", "run", "--config", str(config), "--log-format", "json"],
        env=env,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    log: list[bytes] = []
    with anyio.fail_after(20):
        async for chunk in proc.stderr:
            log.append(chunk)
            if b"every watch polled once" in b"".join(log):
                break
    return proc, log


async def drain(proc: Process, log: list[bytes]) -> None:
    assert proc.stderr is not None
    async for chunk in proc.stderr:
        log.append(chunk)


async def test_kill_9_during_transitions_with_the_notifier_down(tmp_path: Path) -> None:
    world = World()
    for run_id in RUNS:
        world.add_trigger_run(run_id, "job", "QUEUED")
    receiver = WebhookReceiver()
    sim = HttpServer(SimulatorApi(world))
    async with anyio.create_task_group() as tg:
        await tg.start(sim.serve)
        await tg.start(receiver.server.serve)
        config = tmp_path / "watcher.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "state_file": str(tmp_path / "state.db"),
                    "polling": {"min_interval": "200ms", "max_interval": "1s"},
                    # The scenario is paced by the daemon's polls.
                    "sources": {"trigger": {"realtime": False}},
                    "notifications": {"group_wait": "100ms", "group_interval": "300ms"},
                    "watches": [{"type": "trigger_run", "id": run_id} for run_id in RUNS],
                    "notifiers": [
                        {
                            "url": receiver.apprise_url("json"),
                            "tags": ["all"],
                            "format": "json",
                            "name": "audit",
                        }
                    ],
                    "delivery": {
                        "initial_backoff": "100ms",
                        "max_backoff": "300ms",
                        "retry_for": "10m",
                        "max_attempts": 1000,
                    },
                }
            )
        )
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("PARALLEL_", "TRIGGER_", "WATCHER_"))
            },
            "TRIGGER_API_URL": sim.url,
            "TRIGGER_SECRET_KEY": world.trigger_key,
        }
        logs: list[list[bytes]] = []
        proc, log = await start(config, env)
        logs.append(log)

        async def polled(times: int) -> None:
            """The daemon (whichever process runs now) polled ``times`` more times."""
            await world.wait_for_requests(
                "trigger.run", world.requests.get("trigger.run", 0) + times
            )

        played = anyio.Event()

        async def scenario() -> None:
            # The runs move as the daemon watches: each step after it polled a few times.
            for i, run_id in enumerate(RUNS):
                world.set_trigger_run(run_id, "EXECUTING")
                await polled(3)
                if i >= 2:
                    previous = RUNS[i - 2]
                    world.set_trigger_run(
                        previous, "FAILED" if i % 3 else "COMPLETED", "boom" if i % 3 else None
                    )
            await polled(len(RUNS))
            for run_id in RUNS[-2:]:
                world.set_trigger_run(run_id, "COMPLETED")
            played.set()

        tg.start_soon(scenario)
        with anyio.fail_after(30):
            await receiver.wait_for(1)  # notifications flow
        receiver.fail_first = 10**9  # the notifier goes down
        with anyio.fail_after(30):
            await receiver.wait_rejected(2)
        proc.kill()  # SIGKILL, mid-scenario, mid-retry
        await proc.wait()
        proc, log = await start(config, env)
        logs.append(log)
        with anyio.fail_after(30):
            await receiver.wait_rejected(receiver.rejected + 2)  # the new process retries
        receiver.fail_first = 0  # the notifier comes back
        with anyio.fail_after(30):
            await receiver.wait_for(len(receiver.received) + 1)
        proc.kill()  # and again, while it catches up
        await proc.wait()
        proc, log = await start(config, env)
        logs.append(log)
        tg.start_soon(drain, proc, log)
        with anyio.fail_after(30):
            await played.wait()
        finals = {
            run_id: public_status(world.trigger_runs[run_id].state, TRIGGER_CURRENT_API_VERSION)
            for run_id in RUNS
        }
        with anyio.fail_after(30):
            await receiver.wait_until(
                lambda rs: (
                    {(e["subject_id"], e["to_status"]) for r in rs for e in r.events}
                    >= set(finals.items())
                )
            )
        # SIGTERM drains what is still queued: a repeat, had there been one, arrives before exit.
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            assert await proc.wait() == 0
        tg.cancel_scope.cancel()

    events = receiver.events()
    # Every run's transitions chain from QUEUED to where it ended: nothing lost.
    for run_id, final in finals.items():
        steps = sorted(
            {(e["from_status"], e["to_status"]) for e in events if e["subject_id"] == run_id}
        )
        state, path = "QUEUED", []
        while state != final:
            nxt = [to for frm, to in steps if frm == state]
            assert nxt, f"{run_id}: no transition out of {state}; got {steps}"
            state = nxt[0]
            path.append(state)
    # Nothing twice, except what was in flight when the process died (one message per kill).
    seen: set[str] = set()
    repeated_messages = 0
    for message in receiver.received:
        ids = [e["event_id"] for e in message.events]
        if any(i in seen for i in ids):
            repeated_messages += 1
        seen.update(ids)
    assert repeated_messages <= 2, repeated_messages
    counts = Counter(e["event_id"] for e in events)
    assert all(n <= 3 for n in counts.values())
    assert receiver.rejected > 0  # the notifier really was down
    joined = b"".join(b"".join(log) for log in logs).decode(errors="replace")
    assert world.trigger_key not in joined
