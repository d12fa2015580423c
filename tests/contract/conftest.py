"""The providers' official SDKs against the simulator: what they reject, the real API never sends.

``parallel-web`` is a test dependency (pinned in ``constraints.txt``). The Trigger.dev
SDKs are npm packages pinned by ``trigger_sdk/package-lock.json`` and installed here
with ``npm ci`` the first time they are needed; without node and npm those tests are
skipped with the reason, never passed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from sdk_contract import SDK_DIR


def _installed() -> bool:
    marker = SDK_DIR / "node_modules" / ".package-lock.json"
    lock = SDK_DIR / "package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the pinned Trigger.dev SDKs installed beside the client script."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(
            "node and npm are not installed: the Trigger.dev SDK contract tests need them "
            "(apt-get install nodejs npm)"
        )
    if not _installed():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=SDK_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {SDK_DIR} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return node
