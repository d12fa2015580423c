"""``run-watcher demo`` and ``run-watcher simulate``: the simulator on loopback, no keys needed."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any

import anyio
from anyio.abc import TaskStatus

from watcher.config.loader import ConfigError
from watcher.config.model import WatcherConfig
from watcher.config.settings import Settings
from watcher.http_server import HttpServer
from watcher.simulator.api import SimulatorApi
from watcher.simulator.receiver import Received, WebhookReceiver
from watcher.simulator.scenarios import DEMO_GROUP, demo_scenario, play
from watcher.simulator.world import World

__all__ = ["demo_config", "run_demo", "run_simulator"]

_COLORS = {"failure": "31", "warning": "33", "success": "32", "info": "36"}


def demo_config(sim_url: str, receiver_url: str) -> dict[str, Any]:
    """The demo's configuration: every watch type, pointed at the simulator."""
    return {
        "polling": {"min_interval": "1s", "max_interval": "4s", "discovery_interval": "2s"},
        "sources": {"parallel": {"base_url": sim_url}, "trigger": {"base_url": sim_url}},
        "watches": [
            {
                "type": "parallel_task_group",
                "id": DEMO_GROUP,
                "name": "nightly-enrichment",
                "labels": {"team": "data"},
            },
            {"type": "parallel_task_run", "id": "trun_company_profile", "name": "company-profile"},
            {
                "type": "trigger_run",
                "id": "run_invoice_4711",
                "name": "send-invoice",
                "labels": {"team": "billing"},
            },
            {"type": "trigger_run", "id": "run_report_0815", "name": "daily-report"},
            {
                "type": "trigger_runs",
                "id": "prod-failures",
                "name": "prod failures",
                "filter": {"status": ["FAILED", "CRASHED", "SYSTEM_FAILURE"], "tag": ["prod"]},
            },
        ],
        "notifiers": [{"url": receiver_url, "tags": ["screen"], "name": "terminal"}],
        "routes": [
            {"match": {"severity": ["failure", "warning", "success"]}, "notify": ["screen"]},
            {
                "match": {
                    "kind": [
                        "group.runs_added",
                        "group.reactivated",
                        "watch.error",
                        "watch.recovered",
                    ]
                },
                "notify": ["screen"],
            },
        ],
        "delivery": {"drain_timeout": "5s", "initial_backoff": "200ms", "max_backoff": "2s"},
    }


def _print_notification(item: Received, start: float, color: bool) -> None:
    sev = item.payload.get("type", "info")
    title = item.title
    if color:
        title = f"\033[1;{_COLORS.get(str(sev), '0')}m{title}\033[0m"
    print(f"\n+{item.at - start:5.1f}s  {title}")
    for line in item.message.splitlines():
        print(f"         {line}")
    sys.stdout.flush()


def run_demo(*, speed: float = 1.0, verbose: bool = False) -> int:
    """Simulator + webhook receiver + daemon in one process; print what arrives."""
    from watcher.daemon.app import Daemon

    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
    color = sys.stdout.isatty()
    scenario = demo_scenario()
    world = World()
    scenario.setup(world)

    async def main() -> int:
        receiver = WebhookReceiver()
        sim = HttpServer(SimulatorApi(world))
        async with anyio.create_task_group() as tg:
            await tg.start(sim.serve)
            await tg.start(receiver.server.serve)
            config = WatcherConfig.model_validate(
                demo_config(sim.url, receiver.apprise_url("json"))
            )
            settings = Settings(
                parallel_api_key=world.parallel_key, trigger_secret_key=world.trigger_key
            )
            daemon = Daemon(config, settings)
            print(
                f"run-watcher demo: simulator at {sim.url}, {len(config.watches)} watches, notifications below."
            )
            print(
                "Scenario: a task group where two runs fail and the group finishes; a Trigger.dev run"
            )
            print(
                "that is retried then crashes; one that completes; a new failing run found by listing."
            )
            start = anyio.current_time()
            daemon_done = anyio.Event()

            async def run_daemon(
                *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
            ) -> None:
                await daemon.run(task_status=task_status)
                daemon_done.set()

            async def show() -> None:
                shown = 0
                while True:
                    await receiver.wait_for(shown + 1)
                    for item in receiver.received[shown:]:
                        _print_notification(item, start, color)
                    shown = len(receiver.received)

            async def scenario_then_stop() -> None:
                await daemon.ready.wait()
                await play(world, scenario, speed=speed)
                # Let the last changes be polled and delivered before stopping.
                await anyio.sleep(max(3.0, 6.0 / speed))
                daemon.request_stop()

            await tg.start(run_daemon)
            tg.start_soon(show)
            tg.start_soon(scenario_then_stop)
            await daemon_done.wait()
            await anyio.sleep(0.2)
            tg.cancel_scope.cancel()
        print(
            f"\nDemo done: {len(receiver.received)} notifications in {anyio.current_time() - start:.0f}s."
        )
        print(
            "Next: write a config (see config/example.yaml) and run `run-watcher run --config FILE`."
        )
        return 0 if receiver.received else 1

    return anyio.run(main)


def _print_received(received: Received) -> None:
    """One line per message the simulator's receiver got: when, where, title, body."""
    try:
        title, body = received.title, received.message
    except ValueError:
        title, body = "", received.body.decode(errors="replace")
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] message on {received.path}: {title}")
    for line in body.splitlines()[:12]:
        print(f"    {line}")
    sys.stdout.flush()


def run_simulator(*, port: int, scenario: str, receiver_port: int = 9000) -> int:
    """Serve the simulator (and, unless ``receiver_port`` is 0, a webhook receiver that
    prints each message it gets) until interrupted, optionally playing a scenario."""
    world = World()
    chosen = demo_scenario() if scenario == "demo" else None
    if chosen is not None:
        chosen.setup(world)

    async def main() -> None:
        server = HttpServer(SimulatorApi(world), port=port)
        async with anyio.create_task_group() as tg:
            try:
                await tg.start(server.serve)
            except OSError as exc:
                raise ConfigError(
                    [f"--port {port}: cannot listen: {exc.strerror or exc}"]
                ) from None
            print(f"simulator listening on {server.url}")
            print(f"  PARALLEL_BASE_URL={server.url} PARALLEL_API_KEY={world.parallel_key}")
            print(f"  TRIGGER_API_URL={server.url} TRIGGER_SECRET_KEY={world.trigger_key}")
            print(
                "  control API: POST /_sim/faults, /_sim/parallel/..., /_sim/trigger/...; GET /_sim/stats"
            )
            if receiver_port:
                receiver = WebhookReceiver(port=receiver_port, on_receive=_print_received)
                try:
                    await tg.start(receiver.server.serve)
                except OSError as exc:
                    raise ConfigError(
                        [
                            f"--receiver-port {receiver_port}: cannot listen: "
                            f"{exc.strerror or exc} (--receiver-port 0 turns the receiver off)"
                        ]
                    ) from None
                print(
                    f"webhook receiver on {receiver.server.url}: notifier URL "
                    f"{receiver.apprise_url('json')}; each message it gets is printed here"
                )
            sys.stdout.flush()
            if chosen is not None:
                await play(world, chosen)

    with contextlib.suppress(KeyboardInterrupt):
        try:
            anyio.run(main)
        except BaseExceptionGroup as group:
            if (error := ConfigError.only_in(group)) is None:
                raise
            raise error from None
    return 0
