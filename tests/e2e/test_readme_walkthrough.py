"""The README's "Try it against the simulator", walked as written: the commands are read
from the README itself, so the two cannot drift.

Each command runs as a user would type it, in a fresh directory with ``run-watcher``
on the PATH; a command sent to the background is waited for until it is ready (the
simulator's banner, the daemon's first pass), as a person would wait to see it start.
The simulator's and receiver's ports are swapped for free ones. The walk ends when a
message arrives at the simulator's receiver, and the silence line that message
carries is pasted back, as printed.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from cli_harness import clean_env, free_port

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

README = Path(__file__).resolve().parents[2] / "README.md"


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def recipe() -> list[str]:
    """The shell commands of the section, one per entry (a heredoc stays whole)."""
    text = README.read_text()
    section = text.split("### Try it against the simulator", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands: list[str] = []
    lines = iter(block.splitlines())
    for line in lines:
        if not line.strip():
            continue
        if heredoc := re.search(r"<<'(\w+)'", line):
            body = [line]
            for more in lines:
                body.append(more)
                if more.strip() == heredoc.group(1):
                    break
            commands.append("\n".join(body))
        else:
            commands.append(line)
    return commands


class Lines:
    """A background process's output, read line by line as it comes."""

    def __init__(self, proc: Process, stream: str) -> None:
        source = proc.stdout if stream == "stdout" else proc.stderr
        assert source is not None
        self.stream = TextReceiveStream(source)
        self.text = ""

    async def until(self, pattern: str, within: float = 30.0) -> re.Match[str]:
        with anyio.fail_after(within):
            while (found := re.search(pattern, self.text)) is None:
                self.text += await self.stream.receive()
            return found


async def test_the_readme_recipe_shows_a_message(tmp_path: Path) -> None:
    sim_port, hook_port = free_port(), free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if not port_free(9464):
        # Another daemon holds the default address: this one would run without
        # endpoints, and the CLI would talk to the other. Point both at a free port.
        env["WATCHER_HTTP_LISTEN"] = f"127.0.0.1:{free_port()}"

    def typed(command: str) -> str:
        # The user's own ports: the README's, swapped for free ones.
        command = command.replace("8765", str(sim_port))
        command = command.replace("127.0.0.1:9000", f"127.0.0.1:{hook_port}")
        if command.startswith("run-watcher simulate"):
            command = command.replace("simulate", f"simulate --receiver-port {hook_port}", 1)
        return command

    background: list[Process] = []
    simulator: Lines | None = None
    daemon_log: Lines | None = None
    try:
        for command in map(typed, recipe()):
            if command.startswith("export "):
                for pair in shlex.split(command.removeprefix("export "), comments=True):
                    key, _, value = pair.partition("=")
                    env[key] = value
                continue
            code = command.split("#", 1)[0].rstrip() if "<<" not in command else command
            if code.endswith("&"):
                proc = await anyio.open_process(
                    ["bash", "-c", f"exec {code[:-1]}"],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                background.append(proc)
                if " simulate" in code:
                    simulator = Lines(proc, "stdout")
                    await simulator.until(r"webhook receiver on ")
                else:
                    daemon_log = Lines(proc, "stderr")
                    await daemon_log.until(r"every watch polled once")
                continue
            done = await anyio.run_process(["bash", "-c", code], cwd=tmp_path, env=env, check=False)
            out = done.stdout.decode() + done.stderr.decode()
            assert done.returncode == 0, f"{code!r} failed ({done.returncode}): {out}"
            if code.startswith("run-watcher once"):
                assert "EXECUTING" in out
                assert "running=5" in out

        assert simulator is not None, "the recipe starts no simulator"
        await simulator.until(r"message on /hook: \[FAILED\] send-invoice run_try")
        hint = await simulator.until(r"Silence: (run-watcher silence add [^\n]+)")
        pasted = await anyio.run_process(
            ["bash", "-c", hint.group(1)], cwd=tmp_path, env=env, check=False
        )
        assert pasted.returncode == 0, pasted.stderr.decode()
        assert pasted.stdout.decode().startswith("added sil_")
        listed = await anyio.run_process(
            ["bash", "-c", "run-watcher silence ls"], cwd=tmp_path, env=env, check=False
        )
        assert "run_try" in listed.stdout.decode()
        silence_id = pasted.stdout.decode().split()[1]

        # routes show and routes test see the silence just added through the daemon,
        # and name the notifier as the log does.
        async def cli(command: str) -> tuple[int, str]:
            done = await anyio.run_process(
                ["bash", "-c", command], cwd=tmp_path, env=env, check=False
            )
            return done.returncode, done.stdout.decode() + done.stderr.decode()

        rc, shown = await cli("run-watcher routes show --config try.yaml")
        assert rc == 0, shown
        assert f"json://127.0.0.1:{hook_port}/hook" in shown
        assert f"silence {silence_id} (api, until " in shown
        assert "(active now)" in shown
        event = "{kind: run.status_changed, subject_id: run_try, watch: {type: trigger_run, id: run_try}}"
        rc, tested = await cli(f"run-watcher routes test --config try.yaml --event '{event}'")
        assert f"silenced now by {silence_id}: it would not be sent" in tested
        assert rc == 1

        # The log names a group's newly failed runs plainly.
        assert daemon_log is not None
        await daemon_log.until(r'"kind": "group.runs_failed"[^\n]*')
        assert '"transition": "failed (first seen)"' in daemon_log.text
        assert "None ->" not in daemon_log.text
    finally:
        for proc in reversed(background):
            proc.terminate()
            with anyio.move_on_after(15):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
            await proc.aclose()
