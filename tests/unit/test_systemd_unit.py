"""The systemd unit: the directives the README relies on, and systemd's own checks."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "run-watcher.service"


def directives() -> dict[str, list[str]]:
    """Each ``Key=value`` of the unit (keys may repeat)."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_unit_uses_the_notify_protocol_credentials_and_a_state_directory() -> None:
    d = directives()
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert d["WatchdogSec"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "run-watcher run" in d["ExecStart"][0]
    credentials = {value.split(":", 1)[0] for value in d["LoadCredential"]}
    assert credentials == {"parallel-api-key", "trigger-secret-key"}
    assert d["StateDirectory"] == ["run-watcher"]
    assert "WATCHER_STATE_FILE=%S/run-watcher/state.db" in d["Environment"]
    assert d["DynamicUser"] == ["yes"]


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


@needs_systemd
def test_systemd_analyze_security_rates_the_unit_1_5_or_lower(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    match = re.search(r"Overall exposure level for .*?: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match is not None, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 1.5, proc.stdout


@needs_systemd
def test_systemd_analyze_verify_prints_no_warning(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    assert proc.stderr.strip() == ""
