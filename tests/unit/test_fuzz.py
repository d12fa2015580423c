"""Fuzzing: parsers and the config loader only ever raise the project's own errors,
and the events diff emits compose to the final state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from watcher.config.loader import ConfigError, parse_config
from watcher.core.diff import diff_group, diff_run
from watcher.core.events import EventKind, WatchRef, WatchType, freeze
from watcher.core.snapshots import GroupObservation, GroupSnapshot, RunSnapshot
from watcher.core.statuses import ParallelStatus, Source, TriggerStatus
from watcher.sources import parallel_models, trigger_models
from watcher.sources.errors import ResponseShapeError
from watcher.sources.parallel_models import StreamErrorEvent

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T = TypeVar("T")
NOW = datetime(2026, 1, 1, tzinfo=UTC)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)


def outcome(call: Callable[[], T], *allowed: type[Exception]) -> T | Exception:
    """The result of ``call``, or the exception it raised if it is one of ``allowed``."""
    try:
        return call()
    except allowed as exc:
        return exc


def shaped(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the documented keys, each either plausible or arbitrary, some missing."""
    return st.fixed_dictionaries(
        {}, optional={k: v | json_values for k, v in keys.items()}
    ).flatmap(
        lambda d: st.dictionaries(st.text(max_size=8), json_values, max_size=2).map(
            lambda extra: {**extra, **d}
        )
    )


timestamps = st.sampled_from(
    ["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5+00:00", "yesterday", ""]
)
parallel_run = shaped(
    {
        "run_id": st.text(max_size=10),
        "status": st.sampled_from([s.value for s in ParallelStatus]) | st.text(max_size=10),
        "is_active": st.booleans(),
        "modified_at": timestamps,
        "created_at": timestamps,
        "error": shaped({"message": st.text(max_size=10), "ref_id": st.text(max_size=5)}),
        "processor": st.text(max_size=5),
    }
)
group_status = shaped(
    {
        "num_task_runs": st.integers(-5, 10**6),
        "task_run_status_counts": st.dictionaries(
            st.text(max_size=10), st.integers(-5, 100) | json_values
        ),
        "is_active": st.booleans(),
        "status_message": st.text(max_size=10) | st.none(),
        "modified_at": timestamps,
    }
)
parallel_group = shaped({"taskgroup_id": st.text(max_size=10), "status": group_status})
trigger_run = shaped(
    {
        "id": st.text(max_size=10),
        "status": st.sampled_from([s.value for s in TriggerStatus]) | st.text(max_size=10),
        "taskIdentifier": st.text(max_size=10),
        "tags": st.lists(st.text(max_size=5) | json_values, max_size=3),
        "updatedAt": timestamps,
        "delayedUntil": timestamps | st.none(),
        "error": shaped({"message": st.text(max_size=10), "name": st.text(max_size=5)}),
        "attempts": st.lists(
            shaped({"status": st.text(max_size=5), "error": json_values}), max_size=2
        ),
    }
)
trigger_page = shaped(
    {
        "data": st.lists(trigger_run, max_size=3),
        "pagination": shaped({"next": st.text(max_size=5) | st.none()}),
    }
)
stream_event = shaped(
    {
        "type": st.sampled_from(["task_run.state", "error", "task_group_status", "other"]),
        "event_id": st.text(max_size=6) | st.none(),
        "run": parallel_run,
        "error": shaped({"message": st.text(max_size=10)}),
    }
)


def as_body(data: Any) -> bytes:
    """The parsers read an answer's bytes."""
    return json.dumps(data).encode()


@FUZZ
@given(st.one_of(json_values.map(as_body), parallel_run.map(as_body), st.binary(max_size=64)))
def test_parallel_run_parser_raises_only_shape_errors(data: bytes) -> None:
    run = outcome(lambda: parallel_models.parse_run(data, "task run trun_x"), ResponseShapeError)
    if isinstance(run, Exception):
        assert str(run).startswith("task run trun_x: ")
    else:
        assert isinstance(run.status, str)
        assert run.source is Source.PARALLEL


@FUZZ
@given(st.one_of(json_values.map(as_body), parallel_group.map(as_body), st.binary(max_size=64)))
def test_parallel_group_parser_raises_only_shape_errors(data: bytes) -> None:
    group = outcome(
        lambda: parallel_models.parse_group(data, "task group tgrp_x"), ResponseShapeError
    )
    if isinstance(group, Exception):
        return
    assert all(isinstance(v, int) and v for v in group.counts.values())


@FUZZ
@given(st.one_of(json_values.map(as_body), trigger_run.map(as_body), st.binary(max_size=64)))
def test_trigger_run_parser_raises_only_shape_errors(data: bytes) -> None:
    run = outcome(lambda: trigger_models.parse_run(data, "run run_x"), ResponseShapeError)
    if isinstance(run, Exception):
        return
    assert isinstance(run.status, str)
    assert run.source is Source.TRIGGER


@FUZZ
@given(st.one_of(json_values.map(as_body), trigger_page.map(as_body), st.binary(max_size=64)))
def test_trigger_list_parser_raises_only_shape_errors(data: bytes) -> None:
    page = outcome(lambda: trigger_models.parse_list(data, "runs list"), ResponseShapeError)
    if isinstance(page, Exception):
        return
    runs, cursor = page
    assert cursor is None or isinstance(cursor, str)
    assert all(isinstance(r.run_id, str) for r in runs)


@FUZZ
@given(st.one_of(st.text(max_size=40), json_values.map(json.dumps), stream_event.map(json.dumps)))
def test_runs_stream_event_parser_raises_only_its_own_errors(data: str) -> None:
    result = outcome(
        lambda: parallel_models.parse_run_event(data, "runs stream of tgrp_x"),
        ResponseShapeError,
        StreamErrorEvent,
    )
    if isinstance(result, Exception):
        assert "tgrp_x" in str(result)


# --- config loader --------------------------------------------------------------

watch_entries = shaped(
    {
        "type": st.sampled_from(
            ["parallel_task_group", "parallel_task_run", "trigger_run", "trigger_runs", "x"]
        ),
        "id": st.sampled_from(["tgrp_1", "run_1", "../x", "a%2Fb", "a?b"]) | st.text(max_size=6),
        "name": st.text(max_size=6),
        "labels": st.dictionaries(
            st.text(max_size=4), st.text(max_size=4) | json_values, max_size=2
        ),
        "filter": shaped(
            {"status": st.lists(st.text(max_size=8), max_size=2), "task": json_values}
        ),
        "stuck_after": st.sampled_from(["5m", "1s", "-1s", "soon", 3]),
    }
)
config_docs = shaped(
    {
        "polling": shaped(
            {
                "min_interval": st.sampled_from(["2s", "500ms", "0s", "1h", "x", -1, 0.5]),
                "max_interval": st.sampled_from(["5m", "1s", "bad", 10]),
                "discovery_interval": st.sampled_from(["30s", "0", None]),
            }
        ),
        "watches": st.lists(watch_entries, max_size=3),
        "notifiers": st.lists(
            shaped(
                {
                    "url": st.sampled_from(["json://127.0.0.1:1/h", "slack://a/b/c", "nope", ""]),
                    "tags": st.lists(st.text(max_size=4), max_size=2),
                    "format": st.sampled_from(["json", "text", "markdown", "xml"]),
                    "body_template": st.sampled_from(
                        ["{{ event.kind }}", "{% if %}", "{{ x.__class__ }}"]
                    ),
                    "max_per_minute": st.integers(-1, 100),
                }
            ),
            max_size=2,
        ),
        "routes": st.lists(
            shaped(
                {
                    "match": json_values,
                    "notify": st.lists(st.text(max_size=4), max_size=2),
                    "continue": st.booleans(),
                }
            ),
            max_size=2,
        ),
        "silences": st.lists(
            shaped({"match": json_values, "starts": timestamps, "ends": timestamps}), max_size=1
        ),
        "state_file": st.text(max_size=10),
        "retention": st.sampled_from(["24h", "0s", "never"]),
    }
)


def _only_config_errors(text: str) -> None:
    result = outcome(lambda: parse_config(text, "fuzz.yaml"), ConfigError)
    if isinstance(result, ConfigError):
        assert result.problems
        assert all(p.startswith("fuzz.yaml") for p in result.problems)


@FUZZ
@given(st.text(max_size=200))
def test_config_loader_arbitrary_text_raises_only_config_errors(text: str) -> None:
    _only_config_errors(text)


@FUZZ
@given(st.one_of(json_values, config_docs))
def test_config_loader_arbitrary_yaml_raises_only_config_errors(doc: Any) -> None:
    _only_config_errors(yaml.safe_dump(doc))


def test_config_loader_survives_deep_nesting() -> None:
    _only_config_errors("watches: " + "[" * 5000 + "]" * 5000)
    _only_config_errors("a: &a [*a]\n")
    # Deep enough to overflow the C stack of libyaml's recursive builder: refused first.
    for text in ("a: " + "[" * 200_000, "a:\n" + "".join(" " * i + "- \n" for i in range(3000))):
        with pytest.raises(ConfigError, match="nested too deeply"):
            parse_config(text, "deep.yaml")


# --- diff composes ----------------------------------------------------------------

RUN_REF = WatchRef(type=WatchType.TRIGGER_RUN, id="run_1")
GROUP_REF = WatchRef(type=WatchType.PARALLEL_TASK_GROUP, id="tgrp_1")
statuses = st.sampled_from([s.value for s in TriggerStatus] + ["BRAND_NEW_STATUS"])


@FUZZ
@given(st.lists(statuses, min_size=1, max_size=12), st.booleans())
def test_run_events_compose_to_the_final_status(seq: list[str], announce: bool) -> None:
    previous: RunSnapshot | None = None
    emitted = []
    for i, status in enumerate(seq):
        current = RunSnapshot(
            Source.TRIGGER, "run_1", status, updated_at=f"2026-01-01T00:00:{i:02d}Z"
        )
        emitted += diff_run(RUN_REF, previous, current, observed_at=NOW, announce=announce)
        previous = current
    # Replaying the events from the baseline yields the final status.
    state: str | None = None if announce else seq[0]
    for event in emitted:
        assert event.from_status == state
        assert event.to_status != event.from_status
        state = event.to_status
    assert state == seq[-1]
    assert len({e.event_id for e in emitted}) == len(emitted)


counts = st.dictionaries(
    st.sampled_from(["queued", "running", "completed", "failed", "action_required", "new_state"]),
    st.integers(1, 50),
    max_size=4,
)
groups = st.builds(
    lambda active, n, c: GroupSnapshot("tgrp_1", active, n, freeze(c), modified_at="t"),
    st.booleans(),
    st.integers(0, 500),
    counts,
)


@FUZZ
@given(st.lists(groups, min_size=2, max_size=10))
def test_group_events_compose_to_the_final_counts_and_activity(seq: list[GroupSnapshot]) -> None:
    counts_now = dict(seq[0].counts)
    active = seq[0].is_active
    previous = seq[0]
    for current in seq[1:]:
        events = diff_group(GROUP_REF, previous, GroupObservation(current), observed_at=NOW)
        for event in events:
            if event.kind is EventKind.GROUP_COUNTS_CHANGED:
                assert event.details["previous_counts"] == counts_now
                for status, change in event.details["delta"].items():
                    counts_now[status] = counts_now.get(status, 0) + change
                counts_now = {k: v for k, v in counts_now.items() if v}
            elif event.kind is EventKind.GROUP_FINISHED:
                assert active
                active = False
            elif event.kind is EventKind.GROUP_REACTIVATED:
                assert not active
                active = True
        # Reactivation of an empty group is not news; otherwise activity tracks upstream.
        if previous.num_task_runs > 0 or not current.is_active:
            assert active == current.is_active
        active = current.is_active
        previous = current
    assert counts_now == dict(seq[-1].counts)
