from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from watcher.core.diff import diff_group, diff_run
from watcher.core.events import Event, WatchRef, WatchType, freeze
from watcher.core.snapshots import FailedRun, GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import Severity, Source
from watcher.notify.render import render_json, render_text

NOW = datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=UTC)
TRIGGER = WatchRef(WatchType.TRIGGER_RUN, "run_abc", "invoices", freeze({"team": "billing"}))
GROUP = WatchRef(WatchType.PARALLEL_TASK_GROUP, "tgrp_1", "nightly-enrichment")


def crash() -> Event:
    return diff_run(
        TRIGGER,
        RunSnapshot(Source.TRIGGER, "run_abc", "EXECUTING"),
        RunSnapshot(
            Source.TRIGGER, "run_abc", "CRASHED", "u", "Out of memory", "send-invoice", ("prod",), 2
        ),
        observed_at=NOW,
        url_template="https://cloud.trigger.dev/runs/{id}",
    )[0]


def test_run_message_title_and_body() -> None:
    message = render_text([crash()])
    assert message.title == "[CRASHED] send-invoice run_abc"
    assert message.severity is Severity.FAILURE
    body = message.body
    assert "run_abc: EXECUTING → CRASHED" in body
    assert "Error: Out of memory" in body
    assert "Task send-invoice · attempt 2 · tags prod" in body
    assert "Watch: invoices (trigger_run run_abc) · team=billing" in body
    assert "https://cloud.trigger.dev/runs/run_abc" in body
    assert "2026-11-22T10:00:00.123Z" in body


def failures(n: int) -> list[Event]:
    runs = tuple(FailedRun(f"trun_{i:02d}", f"error {i}", f"m{i}") for i in range(n))
    before = GroupSnapshot("tgrp_1", True, n, freeze({"running": n}))
    after = GroupSnapshot("tgrp_1", True, n, freeze({"failed": n}))
    events = diff_group(GROUP, before, GroupObservation(after, runs), observed_at=NOW)
    return [e for e in events if e.kind.value == "group.runs_failed"]


def test_digest_of_many_failures_in_one_group() -> None:
    message = render_text(failures(25))
    assert (
        message.title
        == "[FAILED] 25 runs failed in nightly-enrichment: trun_00, trun_01, trun_02, trun_03, trun_04 (+20 more)"
    )
    lines = message.body.splitlines()
    assert lines[0] == "- trun_00: failed: error 0"
    assert "(+5 more)" in lines
    assert message.severity is Severity.FAILURE


def test_json_digest_holds_every_event_in_its_own_shape() -> None:
    events = failures(3)
    data = json.loads(render_json(events).body)
    assert data["digest"] is True
    assert [e["subject_id"] for e in data["events"]] == ["trun_00", "trun_01", "trun_02"]
    assert all(e["kind"] == "group.runs_failed" for e in data["events"])


def test_transitions_of_one_run_read_as_a_path() -> None:
    first = crash()
    second = replace(first, from_status="CRASHED", to_status="FAILED", event_id="evt_2")
    assert (
        render_text([first, second]).title
        == "[FAILED] send-invoice run_abc (EXECUTING → CRASHED → FAILED)"
    )


def test_group_finished_and_watch_error_titles() -> None:
    before = GroupSnapshot("tgrp_1", True, 3, freeze({"running": 3}))
    after = GroupSnapshot("tgrp_1", False, 3, freeze({"completed": 2, "failed": 1}), "3/3 done")
    finished = diff_group(GROUP, before, GroupObservation(after), observed_at=NOW)[-1]
    message = render_text([finished])
    assert message.title == "[FINISHED] nightly-enrichment: completed 2, failed 1"
    assert "Runs: 3 (completed 2, failed 1)" in message.body


def test_json_body_is_the_event() -> None:
    message = render_json([crash()])
    data = json.loads(message.body)
    assert set(data) >= {
        "event_id",
        "kind",
        "severity",
        "source",
        "watch",
        "subject_id",
        "from_status",
        "to_status",
        "observed_at",
        "details",
    }
    assert data["kind"] == "run.status_changed"
    assert data["source"] == "trigger"
    assert data["watch"] == {
        "type": "trigger_run",
        "id": "run_abc",
        "name": "invoices",
        "labels": {"team": "billing"},
    }
    assert data["observed_at"] == "2026-11-22T10:00:00.123Z"
    assert data["details"]["error"] == "Out of memory"


def test_a_path_with_gaps_says_so() -> None:
    first = crash()
    later = replace(first, from_status="EXECUTING", to_status="FAILED", event_id="evt_3")
    reattempt = replace(first, to_status="REATTEMPTING", event_id="evt_2")
    title = render_text([reattempt, later]).title
    assert title == "[FAILED] send-invoice run_abc (EXECUTING → REATTEMPTING … EXECUTING → FAILED)"


def test_a_run_message_carries_what_on_call_needs_to_act() -> None:
    stack = "Error: Out of memory\n" + "\n".join(
        f"    at frame{i} (src/x.ts:{i}:1)" for i in range(30)
    )
    (event,) = diff_run(
        TRIGGER,
        RunSnapshot(Source.TRIGGER, "run_abc", "EXECUTING"),
        RunSnapshot(
            Source.TRIGGER,
            "run_abc",
            "CRASHED",
            "2026-11-22T09:59:58.000Z",
            "Out of memory",
            "send-invoice",
            attempt=2,
            version="20261122.1",
            environment="prod",
            error_stack=stack,
            started_at="2026-11-22T09:57:28.000Z",
            finished_at="2026-11-22T09:59:58.000Z",
        ),
        observed_at=NOW,
    )
    late = replace(event, details=freeze({**event.details, "seen_late": True}))
    body = render_text([late]).body
    assert "Task send-invoice · env prod · version 20261122.1 · attempt 2 · ran 2m30s" in body
    assert "Stack:\n  Error: Out of memory\n      at frame0 (src/x.ts:0:1)" in body
    assert "(+19 more lines)" in body  # trimmed, and says so
    assert "Changed upstream 2026-11-22T09:59:58.000Z (seen late:" in body
    assert (
        "Silence: run-watcher silence add --match subject_id=run_abc "
        "--match kind=run.status_changed --for 1h"
    ) in body


def test_a_json_digest_title_names_the_kinds_it_holds() -> None:
    events = [*failures(3), crash()]
    assert (
        render_json(events).title == "digest of 4 events: 3 group.runs_failed, 1 run.status_changed"
    )
    assert render_json(failures(2)).title == "digest of 2 group.runs_failed events"


def test_a_progress_line_says_what_changed() -> None:
    before = GroupSnapshot("tgrp_1", True, 6, freeze({"running": 6}), modified_at="a")
    after = GroupSnapshot(
        "tgrp_1", True, 6, freeze({"running": 3, "completed": 3}), modified_at="b"
    )
    (event,) = diff_group(GROUP, before, GroupObservation(after), observed_at=NOW)
    body = render_text([event, event]).body
    assert "tgrp_1: completed +3, running -3 (now completed 3, running 3)" in body
    assert "active → active" not in body
