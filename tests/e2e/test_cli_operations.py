"""``run-watcher run`` as systemd runs it, and the commands that talk to it.

A subprocess with ``NOTIFY_SOCKET`` pointing at a real unix datagram socket and
``WATCHDOG_USEC`` set, its HTTP endpoints on a free loopback port; then
``watch add|ls|rm``, ``status``, ``health``, ``reload``, SIGHUP and SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import anyio
import pytest
from cli_harness import CLI, free_port, sim_env, simulator_and_receiver, write

from watcher.simulator.world import World

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

TOKEN = "cli-token-0123456789abcdef"


class Manager:
    """The service manager's end of NOTIFY_SOCKET: reads every message as it comes,
    as systemd does (an unread socket fills up and the daemon's sends are dropped)."""

    def __init__(self, sock: anyio.abc.UNIXDatagramSocket) -> None:
        self.sock = sock
        self.messages: list[dict[str, str]] = []
        self._read = 0
        self._arrived = anyio.Event()

    async def run(self) -> None:
        async for data, _ in self.sock:
            self.messages.append(dict(line.split("=", 1) for line in data.decode().split("\n")))
            self._arrived.set()

    async def until(self, key: str, value: str = "1", within: float = 20) -> dict[str, str]:
        """The next message (after those already looked at) with ``key=value``."""
        with anyio.fail_after(within):
            while True:
                while self._read < len(self.messages):
                    message = self.messages[self._read]
                    self._read += 1
                    if message.get(key) == value:
                        return message
                self._arrived = anyio.Event()
                await self._arrived.wait()


async def cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    proc = await anyio.run_process([*CLI, *args], env=env, check=False)
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


async def test_run_under_a_fake_systemd_and_drive_it_from_the_cli(tmp_path: Path) -> None:
    world = World()
    world.add_trigger_run("run_one", "deploy", "EXECUTING")
    world.add_trigger_run("run_two", "deploy", "EXECUTING")
    port = free_port()
    async with (
        simulator_and_receiver(world) as (sim, receiver),
        await anyio.create_unix_datagram_socket(local_path=tmp_path / "notify.sock") as sock,
    ):
        config = write(
            tmp_path,
            {
                "polling": {"min_interval": "200ms", "max_interval": "1s"},
                "http": {"listen": f"127.0.0.1:{port}"},
                "watches": [{"type": "trigger_run", "id": "run_one"}],
                "notifiers": [{"url": receiver.apprise_url("json"), "tags": ["all"]}],
            },
        )
        env = {
            **sim_env(sim, world, config),
            "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
            "WATCHDOG_USEC": "400000",
            "WATCHER_API_TOKEN": TOKEN,
        }
        manager = Manager(sock)
        async with (
            anyio.create_task_group() as tg,
            await anyio.open_process(
                [*CLI, "run", "--log-format", "json"], env=env, stderr=subprocess.DEVNULL
            ) as proc,
        ):
            tg.start_soon(manager.run)
            try:
                ready = await manager.until("READY")
                pings = 0
                while pings < 3:
                    await manager.until("WATCHDOG")
                    pings += 1
                no_token = {k: v for k, v in env.items() if k != "WATCHER_API_TOKEN"}
                refused = await cli(no_token, "watch", "add", "trigger_run", "run_two")
                added = await cli(
                    env, "watch", "add", "trigger_run", "run_two", "--name", "from-cli",
                    "--label", "team=web", "--expire-after", "1h",
                )  # fmt: skip
                with anyio.fail_after(10):
                    while True:
                        code, listing = await cli(env, "status")
                        if "run_two" in listing and "ok" in listing.split("run_two")[1][:80]:
                            break
                        await anyio.sleep(0.2)
                bad = await cli(env, "watch", "add", "trigger_run", "../etc")
                health = await cli(env, "health")
                ready_check = await cli(env, "health", "--ready")
                removed = await cli(env, "watch", "rm", "trigger_run", "run_two")
                listed = await cli(env, "watch", "ls")
                silenced = await cli(
                    env, "silence", "add", "--match", "severity=failure,warning",
                    "--match", "labels.team=web", "--for", "30m", "--comment", "deploy",
                )  # fmt: skip
                silences = await cli(env, "silence", "ls")
                ident = silenced[1].split()[1]
                lifted = await cli(env, "silence", "rm", ident)
                bad_match = await cli(env, "silence", "add", "--match", "colour=red")
                reloaded = await cli(env, "reload")
                reload_begin = await manager.until("RELOADING")
                await manager.until("READY")
                proc.send_signal(signal.SIGHUP)
                await manager.until("RELOADING")
                await manager.until("READY")
                proc.send_signal(signal.SIGTERM)
                stopping = await manager.until("STOPPING")
                with anyio.fail_after(20):
                    exit_code = await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                tg.cancel_scope.cancel()
    assert ready["STATUS"].startswith("watching 1, 0 erroring")
    assert refused[0] == 1
    assert "HTTP 401" in refused[1]
    assert added == (0, "added trigger_run:run_two (expires " + added[1].split("expires ")[1])
    assert code == 0
    assert "from-cli" in listing
    assert "api" in listing
    assert bad[0] == 1
    assert "invalid id '../etc'" in bad[1]
    assert health == (0, "ok: /healthz\n")
    assert ready_check == (0, "ok: /readyz\n")
    assert removed == (0, "removed trigger_run:run_two\n")
    assert "run_two" not in listed[1]
    assert silenced[0] == 0
    assert ident.startswith("sil_")
    assert ident in silences[1]
    assert '{"severity":["failure","warning"],"labels.team":"web"}' in silences[1]
    assert "deploy" in silences[1]
    assert lifted == (0, f"removed {ident}\n")
    assert bad_match[0] == 1
    assert "colour" in bad_match[1]
    assert reloaded == (0, "reloaded: 1 watches in the config file\n")
    assert int(reload_begin["MONOTONIC_USEC"]) > 0
    assert stopping["STOPPING"] == "1"
    assert exit_code == 0


async def test_remote_commands_explain_a_missing_daemon(tmp_path: Path) -> None:
    port = free_port()
    config = write(tmp_path, {"http": {"listen": f"127.0.0.1:{port}"}})
    env = {"WATCHER_CONFIG": str(config), "PATH": "/usr/bin:/bin"}
    code, out = await cli(env, "status")
    assert code == 1
    assert f"cannot reach the daemon at http://127.0.0.1:{port}/watches" in out
    off = write(tmp_path, {"watches": [], "http": {"listen": "off"}})
    code, out = await cli({"WATCHER_CONFIG": str(off), "PATH": "/usr/bin:/bin"}, "health")
    assert code == 1
    assert "HTTP endpoints are off" in out


async def test_without_a_config_the_cli_looks_at_the_default_address(tmp_path: Path) -> None:
    """No --url, no WATCHER_URL, no config: the daemon's default address, and a hint."""
    code, out = await cli({"PATH": "/usr/bin:/bin"}, "status")
    assert code == 1
    assert "cannot reach the daemon at http://127.0.0.1:9464/watches" in out
    assert "is the daemon running on this host?" in out
    assert "HTTP endpoints are off" not in out
