"""A Trigger.dev retry end to end: one ``run.retrying``, then the final failure, routed apart.

Under ``2025-07-16`` the simulator shows a retry as the real server does (``EXECUTING``
with ``attemptCount`` 1 -> 2); under ``legacy`` it reads ``REATTEMPTING`` first. Either
way the daemon sends one retry, to the quiet channel, and pages only on the failure.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from harness import receivers, running

from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ROUTES = [
    {"match": {"kind": "run.retrying"}, "notify": ["quiet"]},
    {"match": {"severity": ["failure", "warning"]}, "notify": ["pager"]},
]


def setup(world: World) -> None:
    world.add_trigger_run("run_retry", "send-invoice", "EXECUTING", tags=["billing"])


@pytest.mark.parametrize("api_version", ["2025-07-16", "legacy"])
async def test_a_retry_is_one_quiet_warning_and_the_failure_pages(api_version: str) -> None:
    async with receivers(2) as (quiet, pager):
        notifiers = [
            {"url": quiet.apprise_url("json"), "tags": ["quiet"], "format": "json"},
            {"url": pager.apprise_url("json"), "tags": ["pager"], "format": "json"},
        ]
        async with running(
            [{"type": "trigger_run", "id": "run_retry", "name": "send-invoice"}],
            setup=setup,
            notifiers=notifiers,
            routes=ROUTES,
            sources={"trigger": {"api_version": api_version}},
        ) as env:
            w = env.world
            w.set_trigger_run("run_retry", "RETRYING_AFTER_FAILURE", "Stripe API timed out")
            if api_version == "legacy":  # REATTEMPTING is visible: the retry is told now
                with anyio.fail_after(15):
                    await quiet.wait_for(1)
            else:  # the API still reads EXECUTING, attempt 1: nothing to tell yet
                with anyio.fail_after(15):
                    await w.wait_for_requests("trigger.run", w.requests["trigger.run"] + 2)
                assert quiet.events() == []
            w.set_trigger_run("run_retry", "EXECUTING")  # attempt 2 starts
            with anyio.fail_after(15):
                await quiet.wait_for(1)
            w.set_trigger_run("run_retry", "FAILED", "card declined")
            with anyio.fail_after(15):
                await pager.wait_for(1)

    (retry,) = quiet.events()
    assert retry["kind"] == "run.retrying"
    assert retry["severity"] == "warning"
    assert retry["details"]["attempt"] == 2
    failures: list[dict[str, Any]] = pager.events()
    assert [(e["kind"], e["to_status"]) for e in failures] == [("run.status_changed", "FAILED")]
    assert failures[0]["details"]["error"] == "card declined"
    assert failures[0]["details"]["attempt"] == 2
