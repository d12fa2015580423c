"""The ``run-watcher`` command as a user runs it: a subprocess, exit codes, output."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from cli_harness import CLI, clean_env, sim_env, simulator_and_receiver, write

from watcher.simulator.receiver import WebhookReceiver
from watcher.simulator.world import World

pytestmark = pytest.mark.e2e


def test_check_config_refuses_a_bad_file_with_exit_2(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "polling:\n  min_interval: 2s\n  max_interval: soon\nwatches:\n  - {type: trigger_run, id: run_a, colour: red}\n",
    )
    proc = subprocess.run(
        [*CLI, "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 2
    assert f"{path}:3: polling.max_interval: invalid duration 'soon'" in proc.stderr
    assert f"{path}:5: watches[0].colour: unknown key" in proc.stderr


def test_run_refuses_the_same_file_with_the_same_message(tmp_path: Path) -> None:
    path = write(tmp_path, "watches:\n  - {type: trigger_run, id: run_a, colour: red}\n")
    check = subprocess.run(
        [*CLI, "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    run = subprocess.run(
        [*CLI, "run", "-c", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
        timeout=30,
    )
    assert check.returncode == run.returncode == 2
    assert check.stderr == run.stderr


def test_missing_key_and_missing_config_are_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, {"watches": [{"type": "parallel_task_group", "id": "tgrp_1"}]})
    proc = subprocess.run(
        [*CLI, "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 2
    assert "PARALLEL_API_KEY is not set" in proc.stderr
    proc = subprocess.run(
        [*CLI, "check-config"], capture_output=True, text=True, env=clean_env(), check=False
    )
    assert proc.returncode == 2
    assert "WATCHER_CONFIG" in proc.stderr


def test_bad_notifier_url_is_exit_2_without_echoing_it(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"notifiers": [{"url": "nosuchscheme://user:hunter2@host/x", "tags": ["a"]}]}
    )
    proc = subprocess.run(
        [*CLI, "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 2
    assert "notifiers[0].url: not a valid apprise URL" in proc.stderr
    assert "hunter2" not in proc.stderr


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "config" / "example.yaml"
    env = clean_env(
        PARALLEL_API_KEY="k",
        TRIGGER_SECRET_KEY="k",
        SLACK_WEBHOOK_URL="slack://T000/B000/XXXXXXXXX",
        ONCALL_EMAIL_URL="mailtos://user:pass@smtp.example.com?to=oncall@example.com",
        WATCHER_CONFIG=str(example),
    )
    proc = subprocess.run(
        [*CLI, "check-config"], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "config OK: 5 watches" in proc.stdout
    assert "XXXXXXXXX" not in proc.stdout


@pytest.mark.anyio
async def test_once_prints_a_table_and_exits_1_when_a_watch_errored(tmp_path: Path) -> None:
    world = World()
    world.add_group("tgrp_ok", 3, status="running")
    world.add_trigger_run("run_ok", "t", "EXECUTING")
    config = write(
        tmp_path,
        {
            "watches": [
                {"type": "parallel_task_group", "id": "tgrp_ok", "name": "good-group"},
                {"type": "trigger_run", "id": "run_ok"},
                {"type": "trigger_run", "id": "run_missing"},
            ]
        },
    )
    async with simulator_and_receiver(world) as (sim, _):
        proc = await anyio.run_process(
            [*CLI, "once", "--log-level", "error"], env=sim_env(sim, world, config), check=False
        )
        world.groups.pop("tgrp_ok")
        world.add_group("tgrp_ok", 2, status="completed")
        config.write_text(
            yaml.safe_dump({"watches": [{"type": "parallel_task_group", "id": "tgrp_ok"}]})
        )
        ok = await anyio.run_process(
            [*CLI, "once", "--log-level", "error"], env=sim_env(sim, world, config), check=False
        )
    out = proc.stdout.decode()
    assert proc.returncode == 1
    assert "parallel_task_group:tgrp_ok" in out
    assert "active (3 runs: running=3)" in out
    assert "trigger_run:run_ok" in out
    assert "EXECUTING" in out
    assert "error: trigger_run:run_missing: HTTP 404 from GET /api/v3/runs/run_missing" in out
    assert ok.returncode == 0
    assert "inactive (2 runs: completed=2)" in ok.stdout.decode()


@pytest.mark.anyio
async def test_run_notifies_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    world = World()
    world.add_trigger_run("run_live", "deploy", "EXECUTING")
    async with simulator_and_receiver(world) as (sim, receiver):
        config = write(
            tmp_path,
            {
                "polling": {"min_interval": "200ms", "max_interval": "1s"},
                "watches": [{"type": "trigger_run", "id": "run_live", "name": "deploy"}],
                "notifiers": [
                    {"url": receiver.apprise_url("json"), "tags": ["all"], "format": "json"}
                ],
            },
        )
        async with await anyio.open_process(
            [*CLI, "run", "--log-format", "json"],
            env=sim_env(sim, world, config),
            stderr=subprocess.PIPE,
        ) as proc:
            assert proc.stderr is not None
            log = b""
            with anyio.fail_after(20):
                async for chunk in proc.stderr:
                    log += chunk
                    if b"every watch polled once" in log:
                        break
            world.set_trigger_run("run_live", "FAILED", "deploy broke")
            with anyio.fail_after(20):
                await receiver.wait_for(1)
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(20):
                async for chunk in proc.stderr:
                    log += chunk
                code = await proc.wait()
    assert code == 0
    (event,) = receiver.events()
    assert (event["from_status"], event["to_status"]) == ("EXECUTING", "FAILED")
    lines = [json.loads(line) for line in log.decode().splitlines() if line.startswith("{")]
    messages = [line["event"] for line in lines]
    assert "signal received; shutting down" in messages
    assert "notification queues drained" in messages
    assert messages[-1] == "run-watcher stopped"
    assert world.trigger_key not in log.decode()


async def read_until(stream: anyio.abc.ByteReceiveStream, log: bytearray, needle: bytes) -> None:
    with anyio.fail_after(20):
        async for chunk in stream:
            log += chunk
            if needle in log:
                return
    raise AssertionError(f"{needle!r} not logged:\n{log.decode()}")


async def sighup_twice(
    proc: anyio.abc.Process,
    stderr: anyio.abc.ByteReceiveStream,
    log: bytearray,
    tmp_path: Path,
    base: dict[str, Any],
    world: World,
    receiver: WebhookReceiver,
) -> int:
    """Reload with a watch added, then with a bad file; stop; return the exit code."""
    await read_until(stderr, log, b"every watch polled once")
    added = {"type": "trigger_run", "id": "run_two", "notify_initial": True}
    write(tmp_path, {**base, "watches": [*base["watches"], added]})
    proc.send_signal(signal.SIGHUP)
    await read_until(stderr, log, b"configuration reloaded")
    with anyio.fail_after(20):
        await receiver.wait_for(1)  # run_two announced: it is watched now
    world.set_trigger_run("run_two", "FAILED", "after the reload")
    with anyio.fail_after(20):
        await receiver.wait_for(2)
    write(tmp_path, "watches: [{type: trigger_run, id: '../etc'}]\n")
    proc.send_signal(signal.SIGHUP)
    await read_until(stderr, log, b"reload refused")
    proc.send_signal(signal.SIGTERM)
    with anyio.fail_after(20):
        async for chunk in stderr:
            log += chunk
        return await proc.wait()


@pytest.mark.anyio
async def test_sighup_reloads_and_the_state_file_comes_from_the_environment(
    tmp_path: Path,
) -> None:
    world = World()
    world.add_trigger_run("run_one", "deploy", "EXECUTING")
    world.add_trigger_run("run_two", "deploy", "EXECUTING")
    state = tmp_path / "state" / "state.db"
    state.parent.mkdir()  # as systemd's StateDirectory= does: the daemon does not create it
    async with simulator_and_receiver(world) as (sim, receiver):
        base = {
            "polling": {"min_interval": "200ms", "max_interval": "1s"},
            "watches": [{"type": "trigger_run", "id": "run_one"}],
            "notifiers": [{"url": receiver.apprise_url("json"), "tags": ["all"], "format": "json"}],
        }
        config = write(tmp_path, base)
        env = {**sim_env(sim, world, config), "WATCHER_STATE_FILE": str(state)}
        async with await anyio.open_process(
            [*CLI, "run", "--log-format", "json"], env=env, stderr=subprocess.PIPE
        ) as proc:
            assert proc.stderr is not None
            log = bytearray()
            try:
                code = await sighup_twice(proc, proc.stderr, log, tmp_path, base, world, receiver)
            finally:
                if proc.returncode is None:
                    proc.kill()
    assert code == 0
    assert [(e["subject_id"], e["to_status"]) for e in receiver.events()] == [
        ("run_two", "EXECUTING"),
        ("run_two", "FAILED"),
    ]
    assert "watches[0].id" in log.decode()
    assert state.stat().st_mode & 0o777 == 0o600


@pytest.mark.anyio
async def test_test_notify_reports_each_notifier(tmp_path: Path) -> None:
    world = World()
    async with simulator_and_receiver(world) as (sim, receiver):
        config = write(
            tmp_path,
            {
                "notifiers": [
                    {"url": receiver.apprise_url("json"), "tags": ["good"], "name": "receiver"},
                    {"url": "json://127.0.0.1:9/dead", "tags": ["bad"], "name": "dead-end"},
                ]
            },
        )
        env = sim_env(sim, world, config)
        good = await anyio.run_process([*CLI, "test-notify", "--tag", "good"], env=env, check=False)
        both = await anyio.run_process([*CLI, "test-notify"], env=env, check=False)
    assert good.returncode == 0
    assert "ok   receiver" in good.stdout.decode()
    assert both.returncode == 1
    assert "FAIL dead-end" in both.stdout.decode()
    assert receiver.received[0].title == "[TEST] run-watcher test notification"


def test_demo_shows_a_failure_a_finished_group_and_a_crash() -> None:
    proc = subprocess.run(
        [*CLI, "demo", "--speed", "3"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "failed in nightly-enrichment" in out
    assert "[FINISHED] nightly-enrichment: completed 10, failed 2" in out
    assert "[CRASHED] send-invoice run_invoice_4711" in out
    assert "[FAILED] sync-crm run_sync_crm_9001" in out
    assert "Demo done" in out


def test_routes_show_and_test(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        {
            "notifiers": [
                {"url": "json://127.0.0.1:9/a", "tags": ["oncall"], "name": "pager"},
                {"url": "json://127.0.0.1:9/b", "tags": ["audit"], "name": "audit-log"},
            ],
            "routes": [
                {
                    "match": {"labels.team": "data"},
                    "notify": ["audit"],
                    "continue": True,
                    "routes": [{"match": {"severity": "failure"}, "notify": ["oncall"]}],
                },
                {"match": {}, "notify": ["audit"]},
            ],
        },
    )
    shown = subprocess.run(
        [*CLI, "routes", "show", "-c", str(config)],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "routes[0].routes[0]: match severity=failure" in shown.stdout
    event = "{severity: failure, watch: {type: trigger_run, id: run_a, labels: {team: data}}}"
    tested = subprocess.run(
        [*CLI, "routes", "test", "-c", str(config), "--event", event],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert tested.returncode == 0, tested.stderr
    assert "routes[0].routes[0] -> pager" in tested.stdout
    assert "notifiers: pager, audit-log" in tested.stdout
    bad = subprocess.run(
        [*CLI, "routes", "test", "-c", str(config), "--event", "{severity: fatal}"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    assert bad.returncode == 2
    assert "'fatal' is not a valid Severity" in bad.stderr


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        check=False,
        timeout=60,
    )


def test_run_with_its_http_port_in_use_exits_2_naming_the_address(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(tmp_path, {"http": {"listen": f"127.0.0.1:{port}"}})
        proc = run_cli("run", "--config", str(path))
    assert proc.returncode == 2
    assert f"http.listen 127.0.0.1:{port}: cannot listen: Address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_input_is_named_precisely(tmp_path: Path) -> None:
    path = write(tmp_path, {"watches": [{"type": "trigger_run", "id": "run_a"}]})
    empty_key = run_cli("check-config", "--config", str(path), env=clean_env(TRIGGER_SECRET_KEY=""))
    assert empty_key.returncode == 2
    assert "environment TRIGGER_SECRET_KEY: is set but empty" in empty_key.stderr
    typo = run_cli(
        "routes", "test", "--config", str(path), "--event", "{kind: run.retrying, serverity: failure}",
        env=clean_env(TRIGGER_SECRET_KEY="tr_dev_x"),
    )  # fmt: skip
    assert typo.returncode == 2
    assert "event.serverity: unknown key" in typo.stderr
    nowhere = write(tmp_path, {"state_file": str(tmp_path / "no-such-dir" / "state.db")})
    state = run_cli("check-config", "--config", str(nowhere))
    assert state.returncode == 2
    assert f"state_file: {tmp_path}/no-such-dir/state.db: directory" in state.stderr
    assert "does not exist; create it" in state.stderr
    assert not (tmp_path / "no-such-dir").exists()


def test_completion_prints_a_script() -> None:
    proc = run_cli("completion", "bash")
    assert proc.returncode == 0
    assert "run-watcher" in proc.stdout
    assert "check-config" in proc.stdout
