"""Notifications through real receivers: HTTP (json://, form://) and SMTP (mailto://)."""

from __future__ import annotations

import anyio
import pytest
from harness import receivers, running, settled
from smtp_receiver import MailBox, smtp_server

from watcher.core.statuses import Severity
from watcher.notify.apprise_sender import AppriseNotifier
from watcher.notify.render import Message
from watcher.simulator.world import Fault, World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

FAST_RETRIES = {
    "initial_backoff": "200ms",
    "max_backoff": "1s",
    "retry_for": "2m",
    "max_attempts": 200,
    "timeout": "2s",
}


def storm_world(world: World) -> None:
    world.add_group("tgrp_storm", 300, status="running")
    world.add_trigger_run("run_quiet", "maintenance-job", "EXECUTING", tags=["x"])
    world.add_trigger_run("run_loud", "billing", "EXECUTING")


STORM_WATCHES = [
    {
        "type": "parallel_task_group",
        "id": "tgrp_storm",
        "name": "nightly-enrichment",
        "labels": {"team": "data"},
    },
    {"type": "trigger_run", "id": "run_quiet", "name": "maintenance", "labels": {"team": "quiet"}},
    {"type": "trigger_run", "id": "run_loud", "name": "billing", "labels": {"team": "web"}},
]


async def test_storm_down_notifier_silence_and_email() -> None:
    """Digests instead of floods; nothing lost for healthy notifiers; the down one
    catches up; the silenced label absent; the email readable."""
    async with receivers(2) as (audit, chat), smtp_server() as mail:
        notifiers = [
            {"url": audit.apprise_url("json"), "tags": ["all"], "format": "json", "name": "audit"},
            {"url": chat.apprise_url("form"), "tags": ["all"], "name": "chat"},
            {"url": mail.url(), "tags": ["all"], "name": "email"},
        ]
        chat.fail_first = 10**9  # down from the start
        async with running(
            STORM_WATCHES,
            setup=storm_world,
            notifiers=notifiers,
            notifications={"group_wait": "1s", "group_interval": "5s"},
            silences=[{"name": "quiet-team", "match": {"labels.team": "quiet"}}],
            delivery=FAST_RETRIES,
        ) as env:
            w = env.world
            w.progress_group("tgrp_storm", 300, "failed", "upstream site answered 503")
            w.set_trigger_run("run_quiet", "FAILED", "ignored during maintenance")
            w.set_trigger_run("run_loud", "FAILED", "card declined")
            with anyio.fail_after(20):
                await audit.wait_until(
                    lambda rs: (
                        sum(1 for r in rs for e in r.events if e["kind"] == "group.runs_failed")
                        >= 300
                    )
                )
                await mail.wait_until(
                    lambda ms: any("300 runs failed" in str(m["Subject"]) for m in ms)
                )
            with anyio.fail_after(20):  # the chat notifier stays down a while longer
                while chat.rejected < 3:  # noqa: ASYNC110 - the receiver counts refusals
                    await anyio.sleep(0.05)
            assert chat.received == []
            chat.fail_first = 0
            with anyio.fail_after(30):
                await chat.wait_until(
                    lambda rs: (
                        any("300 runs failed" in r.title for r in rs)
                        and any("billing" in r.title for r in rs)
                    )
                )
            await settled(env.daemon)
            failed_while_down = chat.rejected

    events = audit.events()
    failures = [e for e in events if e["kind"] == "group.runs_failed"]
    assert len(failures) == len({e["event_id"] for e in failures}) == 300
    assert all(e["details"]["error"] == "upstream site answered 503" for e in failures)
    assert not [e for e in events if e["watch"]["id"] == "run_quiet"], "silenced events were sent"
    assert any(e["subject_id"] == "run_loud" and e["to_status"] == "FAILED" for e in events)
    assert len(audit.received) <= 6, f"{len(audit.received)} JSON messages for one storm"

    assert len(mail.messages) <= 4, [m["Subject"] for m in mail.messages]
    storm_mail = next(m for m in mail.messages if "300 runs failed" in str(m["Subject"]))
    html = MailBox.html(storm_mail)
    assert "<table" in html
    assert '<td>failed</td><td align="right">300</td>' in html
    assert "upstream site answered 503" in html
    assert "and 280 more" in html
    assert not any("maintenance" in str(m["Subject"]) for m in mail.messages)

    assert failed_while_down > 0
    titles = [r.title for r in chat.received]
    assert len(titles) <= 5, titles
    assert not any("maintenance" in t for t in titles)
    assert chat.received[0].payload["type"] in {"failure", "warning", "info", "success"}


async def test_stuck_run_reminders_and_resolution() -> None:
    def world(w: World) -> None:
        w.add_parallel_run("trun_slow", "running")

    routes = [{"match": {}, "notify": ["all"], "repeat_interval": "2s", "send_resolved": True}]
    watch = {
        "type": "parallel_task_run",
        "id": "trun_slow",
        "name": "slow-research",
        "stuck_after": "1s",
    }
    async with running([watch], setup=world, routes=routes) as env:
        await env.wait_until(
            lambda evs: sum(1 for e in evs if e["kind"] == "condition.reminder") >= 2, within=20
        )
        env.world.set_parallel_run("trun_slow", "completed")
        events = await env.wait_until(
            lambda evs: any(e["kind"] == "condition.resolved" for e in evs)
        )
        events = await env.settle()
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run.stuck"
    assert kinds.count("run.stuck") == 1
    stuck = events[0]
    assert stuck["severity"] == "warning"
    assert stuck["details"]["stuck_after_seconds"] == 1.0
    reminders = [e for e in events if e["kind"] == "condition.reminder"]
    assert [r["details"]["reminder"] for r in reminders] == list(range(1, len(reminders) + 1))
    assert all(r["cause"]["event_id"] == stuck["event_id"] for r in reminders)
    resolved = next(e for e in events if e["kind"] == "condition.resolved")
    assert resolved["details"]["condition"] == "run.stuck"
    assert resolved["details"]["now"] == "completed"
    assert kinds.index("condition.resolved") > kinds.index("run.status_changed")
    assert kinds[-1] == "condition.resolved"  # no reminder after the end


async def test_a_hanging_notifier_times_out_without_delaying_the_others() -> None:
    def world(w: World) -> None:
        w.add_trigger_run("run_h", "t", "EXECUTING")

    async with receivers(1) as (healthy,), receivers(1, hang=True) as (hung,):
        notifiers = [
            {"url": healthy.apprise_url("json"), "tags": ["all"], "format": "json"},
            {"url": hung.apprise_url("json"), "tags": ["all"], "format": "json", "name": "hung"},
        ]
        async with running(
            [{"type": "trigger_run", "id": "run_h"}],
            setup=world,
            notifiers=notifiers,
            delivery={
                "timeout": "1s",
                "max_attempts": 2,
                "initial_backoff": "100ms",
                "max_backoff": "200ms",
                "drain_timeout": "1s",
            },
        ) as env:
            start = anyio.current_time()
            env.world.set_trigger_run("run_h", "FAILED", "x")
            with anyio.fail_after(5):
                await healthy.wait_for(1)
            latency = anyio.current_time() - start
            hung_channel = next(c for c in env.daemon.channels if c.name == "hung")
            with anyio.fail_after(15):
                await healthy.wait_for(2)
            await settled(env.daemon)
            undeliverable = hung_channel.undeliverable
    events = healthy.events()
    assert latency < 2.0
    assert undeliverable == 1
    assert [e["kind"] for e in events] == ["run.status_changed", "notifier.failed"]
    assert events[1]["subject_id"] == "hung"
    assert events[1]["severity"] == "failure"


async def test_receiver_failing_its_first_requests_gets_everything_once() -> None:
    def world(w: World) -> None:
        w.add_trigger_run("run_r", "t", "EXECUTING")

    async with receivers(1, fail_first=3) as (flaky,):
        notifiers = [{"url": flaky.apprise_url("json"), "tags": ["all"], "format": "json"}]
        async with running(
            [{"type": "trigger_run", "id": "run_r"}],
            setup=world,
            notifiers=notifiers,
            delivery=FAST_RETRIES,
        ) as env:
            env.world.set_trigger_run("run_r", "FAILED", "x")
            with anyio.fail_after(15):
                await flaky.wait_for(1)
            await env.settle()
    assert flaky.rejected == 3
    assert [e["to_status"] for e in flaky.events()] == ["FAILED"]


async def test_form_receiver_gets_title_body_and_type(tmp_path: object) -> None:
    def world(w: World) -> None:
        w.add_trigger_run("run_f", "send-invoice", "EXECUTING")

    async with receivers(1) as (form,):
        notifiers = [
            {
                "url": form.apprise_url("form"),
                "tags": ["all"],
                "body_template": "{{ event.subject_id }} is {{ event.to_status }} ({{ watch.labels.team }})",
            }
        ]
        watch = {"type": "trigger_run", "id": "run_f", "labels": {"team": "billing"}}
        async with running([watch], setup=world, notifiers=notifiers) as env:
            env.world.set_trigger_run("run_f", "CRASHED", "x")
            with anyio.fail_after(10):
                await form.wait_for(1)
    (received,) = form.received
    assert (
        received.headers["content-type"].startswith("multipart/form-data")
        or "urlencoded" in received.headers["content-type"]
    )
    assert received.title == "[CRASHED] send-invoice run_f"
    assert received.message == "run_f is CRASHED (billing)"
    assert received.payload["type"] == "failure"


async def test_a_provider_outage_is_one_message_and_one_recovery() -> None:
    """Every watch of a provider that goes down loses sight at once: one message naming
    them, then one when they see again, not one per watch."""
    runs = [f"run_out{i}" for i in range(4)]

    def setup(w: World) -> None:
        for run_id in runs:
            w.add_trigger_run(run_id, "t", "EXECUTING")

    async with running(
        [{"type": "trigger_run", "id": r, "name": f"job-{r[-1]}"} for r in runs],
        setup=setup,
        fmt="text",
        notifications={"group_wait": "1s", "group_interval": "5s"},
        polling={"error_threshold": 1},
    ) as env:
        env.world.add_fault(Fault(match="/api/v3/runs/", status=503))
        with anyio.fail_after(20):
            await env.receiver.wait_until(lambda rs: any("cannot see" in r.title for r in rs))
        env.world.clear_faults()
        with anyio.fail_after(20):
            await env.receiver.wait_until(lambda rs: any("watching again" in r.title for r in rs))
    titles = [r.title for r in env.receiver.received]
    (down,) = [t for t in titles if "cannot see" in t]
    (back,) = [t for t in titles if "watching again" in t]
    assert down.startswith("[WATCH UNREACHABLE] Trigger.dev: 4 watches cannot see upstream:")
    assert all(f"job-{i}" in down for i in range(4))
    assert back.startswith("[RECOVERED] Trigger.dev: 4 watches watching again:")
    assert len(titles) == 2


async def test_a_failed_send_says_why() -> None:
    """The reason apprise logged reaches the delivery result: what the SMTP server
    refused, the status a webhook answered, a refused connection."""
    async with smtp_server() as mail, receivers(1, fail_first=10, fail_status=503) as (hook,):
        smtp = AppriseNotifier(
            f"mailto://user:secret-pw@127.0.0.1:{mail.port}?from=w@example.com&to=a@example.com",
            timeout=5,
        )
        web = AppriseNotifier(hook.apprise_url("json"), timeout=5)
        message = Message(title="t", body="b", severity=Severity.INFO)
        refused, answered = await smtp.send(message), await web.send(message)
    assert not refused.ok
    assert "SMTP AUTH extension not supported by server" in refused.detail
    assert not answered.ok
    assert "503" in answered.detail
