"""Response parsing follows ../shared/reference and tolerates what it does not know."""

from __future__ import annotations

import json

import pytest

from watcher.core.snapshots import FailedRun
from watcher.sources import parallel_models, trigger_models
from watcher.sources.errors import ResponseShapeError
from watcher.sources.parallel_models import StreamErrorEvent

GROUP = {
    "taskgroup_id": "tgrp_1",
    "metadata": {"k": "v"},
    "status": {
        "num_task_runs": 5,
        "task_run_status_counts": {
            "queued": 1,
            "running": 2,
            "completed": 1,
            "failed": 1,
            "cancelled": 0,
        },
        "is_active": True,
        "status_message": "going",
        "modified_at": "2025-04-24T18:56:22.513132Z",
        "brand_new_field": 1,
    },
    "created_at": "2025-04-24T18:56:22.513132Z",
}


def body(data: object) -> bytes:
    """An answer's body: the parsers read bytes."""
    return json.dumps(data).encode()


def test_parallel_group() -> None:
    snap = parallel_models.parse_group(body(GROUP), "GET /v1/tasks/groups/tgrp_1")
    assert snap.group_id == "tgrp_1"
    assert snap.is_active
    assert snap.num_task_runs == 5
    assert dict(snap.counts) == {"queued": 1, "running": 2, "completed": 1, "failed": 1}
    assert snap.modified_at == "2025-04-24T18:56:22.513132Z"


def test_parallel_group_with_an_unknown_status_count() -> None:
    data = json.loads(json.dumps(GROUP))
    data["status"]["task_run_status_counts"]["paused"] = 3
    assert parallel_models.parse_group(body(data), "x").count("paused") == 3


def test_parallel_run_reference_example() -> None:
    snap = parallel_models.parse_run(
        body(
            {
                "run_id": "trun_9907962f83aa4d9d98fd7f4bf745d654",
                "status": "failed",
                "is_active": False,
                "processor": "core",
                "metadata": {"my_key": "my_value"},
                "created_at": "2025-04-23T20:21:48.037943Z",
                "modified_at": "2025-04-23T20:21:48.037943Z",
                "error": {"ref_id": "r", "message": "Run failed", "detail": {}},
            }
        ),
        "x",
    )
    assert (snap.status, snap.error_message, snap.task) == ("failed", "Run failed", "core")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"status": {}}, "taskgroup_id"),
        (
            {
                "taskgroup_id": "x",
                "status": {
                    "num_task_runs": "many",
                    "task_run_status_counts": {},
                    "is_active": True,
                },
            },
            "num_task_runs",
        ),
        ([1, 2], "(body)"),
    ],
)
def test_wrong_shape_is_a_named_error(data: object, needle: str) -> None:
    with pytest.raises(ResponseShapeError, match="unexpected response shape") as info:
        parallel_models.parse_group(body(data), "GET /v1/tasks/groups/tgrp_1")
    assert needle in str(info.value)
    assert "GET /v1/tasks/groups/tgrp_1" in str(info.value)


def test_runs_stream_events() -> None:
    run = {
        "run_id": "trun_a",
        "status": "failed",
        "error": {"ref_id": "r", "message": "boom"},
        "modified_at": "m",
    }
    parsed = parallel_models.parse_run_event(
        json.dumps({"type": "task_run.state", "event_id": "ev_1", "run": run}), "x"
    )
    assert parsed is not None
    event_id, snap = parsed
    assert event_id == "ev_1"
    assert FailedRun.of(snap).error_message == "boom"
    assert (
        parallel_models.parse_run_event(
            json.dumps({"type": "task_group_status", "event_id": "e"}), "x"
        )
        is None
    )
    with pytest.raises(StreamErrorEvent, match="quota"):
        parallel_models.parse_run_event(
            json.dumps({"type": "error", "error": {"ref_id": "r", "message": "quota"}}), "x"
        )
    with pytest.raises(ResponseShapeError, match="malformed JSON"):
        parallel_models.parse_run_event("{nope", "x")
    with pytest.raises(ResponseShapeError, match=r"^x: malformed JSON \("):
        parallel_models.parse_run(b'{"run_id": "r", ', "x")


LEGACY_RUN = {
    "id": "run_1234",
    "status": "CRASHED",
    "taskIdentifier": "my-task",
    "createdAt": "2023-11-07T05:31:56Z",
    "updatedAt": "2023-11-07T05:31:58Z",
    "tags": ["user_5df987al13"],
    "payload": {"secret": "customer"},
    "output": {"secret": "customer"},
    "attempts": [
        {
            "id": "attempt_1",
            "status": "FAILED",
            "error": {"message": "first", "name": "Error"},
            "createdAt": "x",
            "updatedAt": "x",
        },
        {
            "id": "attempt_2",
            "status": "FAILED",
            "error": {"message": "Out of memory", "name": "OOMError"},
            "createdAt": "x",
            "updatedAt": "x",
        },
    ],
}


def test_trigger_legacy_run_takes_the_last_attempt_error() -> None:
    snap = trigger_models.parse_run(body(LEGACY_RUN), "x")
    assert snap.status == "CRASHED"
    assert snap.task == "my-task"
    assert snap.error_message == "OOMError: Out of memory"
    assert snap.attempt == 2
    assert snap.tags == ("user_5df987al13",)
    assert "customer" not in repr(snap)


def test_trigger_current_run_uses_top_level_error() -> None:
    data = {
        **LEGACY_RUN,
        "status": "FAILED",
        "error": {"message": "top", "name": "Error"},
        "attemptCount": 3,
    }
    del data["attempts"]
    snap = trigger_models.parse_run(body(data), "x")
    assert (snap.error_message, snap.attempt) == ("top", 3)


def test_trigger_unknown_status_and_delayed_until() -> None:
    snap = trigger_models.parse_run(
        body({**LEGACY_RUN, "status": "HIBERNATING", "delayedUntil": "2026-11-22T10:00:00Z"}), "x"
    )
    assert snap.status == "HIBERNATING"
    assert snap.delayed_until is not None


def test_trigger_list() -> None:
    runs, cursor = trigger_models.parse_list(
        body({"data": [LEGACY_RUN], "pagination": {"next": "run_1234"}}), "x"
    )
    assert [r.run_id for r in runs] == ["run_1234"]
    assert cursor == "run_1234"
    assert trigger_models.parse_list(body({"data": [], "pagination": {}}), "x") == ([], None)
    with pytest.raises(ResponseShapeError):
        trigger_models.parse_list(body({"runs": []}), "x")
