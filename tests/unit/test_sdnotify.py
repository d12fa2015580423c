"""The sd_notify protocol against a real unix datagram socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.daemon.sdnotify import SystemdNotifier, notify_address, watchdog_interval


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_messages_reach_the_socket(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("watching 3")
    assert fields(sock) == {"READY": "1", "STATUS": "watching 3"}
    notifier.reloading()
    got = fields(sock)
    assert got["RELOADING"] == "1"
    assert int(got["MONOTONIC_USEC"]) > 0
    notifier.status("two\nlines")
    assert fields(sock) == {"STATUS": "two lines"}
    notifier.ping()
    assert fields(sock) == {"WATCHDOG": "1"}
    notifier.stopping()
    assert fields(sock)["STOPPING"] == "1"
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"run-watcher-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        notifier.ready("ok")
        assert fields(sock)["READY"] == "1"
    finally:
        notifier.close()
        sock.close()


def test_without_a_manager_every_call_is_a_no_op() -> None:
    notifier = SystemdNotifier.from_environ({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.ping() is False


def test_a_gone_manager_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.status("x") is False
    notifier.close()


def test_addresses_and_watchdog_interval() -> None:
    assert notify_address({"NOTIFY_SOCKET": "/run/x"}) == "/run/x"
    assert notify_address({"NOTIFY_SOCKET": "@abc"}) == "\0abc"
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:999"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "nope"}, 42) is None
    assert watchdog_interval({}, 42) is None
