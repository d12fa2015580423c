"""The shape fold: Electric's messages in, complete rows out, however the log is split."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.core.shape import (
    INITIAL_OFFSET,
    Column,
    ShapeFold,
    ShapeResponse,
    parse_schema,
    parse_value,
)

SCHEMA = parse_schema(
    json.dumps(
        {
            "id": {"type": "text", "not_null": True},
            "status": {"type": "TaskRunStatus"},
            "isTest": {"type": "bool"},
            "number": {"type": "int4"},
            "cost": {"type": "float8"},
            "error": {"type": "jsonb"},
            "runTags": {"type": "text", "dims": 1},
        }
    )
)
UP = {"headers": {"control": "up-to-date"}}


def change(op: str, key: str, **value: Any) -> dict[str, Any]:
    return {"key": key, "value": value, "headers": {"operation": op}}


def test_values_read_as_their_postgres_type() -> None:
    assert SCHEMA is not None
    assert parse_value("t", SCHEMA["isTest"]) is True
    assert parse_value("f", SCHEMA["isTest"]) is False
    assert parse_value("42", SCHEMA["number"]) == 42
    assert parse_value("0.25", SCHEMA["cost"]) == 0.25
    assert parse_value('{"message": "x"}', SCHEMA["error"]) == {"message": "x"}
    assert parse_value('{a,"b c","quo\\"te",NULL}', SCHEMA["runTags"]) == [
        "a",
        "b c",
        'quo"te',
        None,
    ]
    assert parse_value("{}", SCHEMA["runTags"]) == []
    assert parse_value(None, SCHEMA["error"]) is None
    assert parse_value("EXECUTING", SCHEMA["status"]) == "EXECUTING"  # an enum stays text
    assert parse_value("x", None) == "x"
    with pytest.raises(ValueError, match="not an array"):
        parse_value("a,b", Column("text", 1))
    with pytest.raises(ValueError, match="Expecting"):
        parse_value("{not json", Column("jsonb"))


def test_unreadable_schema_headers_are_none() -> None:
    assert parse_schema(None) is None
    assert parse_schema("not json") is None
    assert parse_schema("[1]") is None
    assert parse_schema('{"a": {"type": "int4", "dims": 1}, "b": 3}') == {"a": Column("int4", 1)}


def test_updates_merge_and_rows_come_out_once_up_to_date() -> None:
    fold = ShapeFold()
    snapshot = ShapeResponse(
        [change("insert", "k1", id="r1", status="PENDING", isTest="f")],
        handle="h1",
        offset="0_0",
        schema=SCHEMA,
    )
    assert fold.apply(snapshot) == ()  # no up-to-date yet: nothing final
    assert fold.cursor.handle == "h1"
    assert fold.cursor.offset == "0_0"
    (row,) = fold.apply(ShapeResponse([UP], offset="0_0"))
    assert row == {"id": "r1", "status": "PENDING", "isTest": False}
    assert fold.synced
    (row,) = fold.apply(
        ShapeResponse(
            [change("update", "k1", status="EXECUTING"), change("update", "k1", status="FAILED")],
            offset="2_0",
            cursor="c1",
            up_to_date=True,  # the header says it
        )
    )
    assert row == {"id": "r1", "status": "FAILED", "isTest": False}
    assert fold.cursor.cursor == "c1"
    assert fold.apply(ShapeResponse([UP], offset="2_0")) == ()  # nothing changed since


def test_a_trail_keeps_what_each_row_passed_through_in_its_batch() -> None:
    fold = ShapeFold(trail="status")
    fold.apply(
        ShapeResponse(
            [change("insert", "k1", id="r1", status="EXECUTING"), change("insert", "k2", id="r2")],
            handle="h1",
            offset="0_0",
            up_to_date=True,
        )
    )
    assert list(fold.trails) == [(None, "EXECUTING"), (None,)]  # new rows: nothing before
    batch = [
        change("update", "k1", status="RETRYING_AFTER_FAILURE"),
        change("update", "k2", number="3"),  # moved, but not in the trail's column
        change("update", "k1", status="EXECUTING"),
    ]
    rows = fold.apply(ShapeResponse([*batch, UP], offset="3_0"))
    assert [r["id"] for r in rows] == ["r1", "r2"]
    assert list(fold.trails) == [
        ("EXECUTING", "RETRYING_AFTER_FAILURE", "EXECUTING"),
        (None,),  # k2 holds no status
    ]
    fold.apply(ShapeResponse([change("update", "k1", status="FAILED")], offset="4_0"))
    assert list(fold.trails) == []  # not up to date: nothing came out
    (_row,) = fold.apply(ShapeResponse([UP], offset="4_0"))
    assert list(fold.trails) == [("EXECUTING", "FAILED")]


def test_must_refetch_drops_everything_and_starts_again() -> None:
    fold = ShapeFold()
    fold.apply(ShapeResponse([change("insert", "k1", id="r1"), UP], handle="h1", offset="1_0"))
    fold.apply(ShapeResponse([{"headers": {"control": "must-refetch"}}], handle="h2", offset="5_0"))
    assert fold.rows == {}
    assert fold.cursor.handle == "h2"
    assert fold.cursor.offset == INITIAL_OFFSET
    assert fold.cursor.initial
    assert not fold.synced


def test_kept_rows_only_and_updates_of_others_come_out_as_they_are() -> None:
    fold = ShapeFold(keep=lambda row: row.get("id") == "mine")
    out = fold.apply(
        ShapeResponse(
            [
                change("insert", "k1", id="mine", status="PENDING"),
                change("insert", "k2", id="other", status="PENDING"),
                UP,
            ],
            schema=SCHEMA,
        )
    )
    assert set(fold.rows) == {"k1"}
    assert [r["id"] for r in out] == ["mine"]  # the snapshot's others: dropped at once
    (partial,) = fold.apply(ShapeResponse([change("update", "k2", status="FAILED"), UP]))
    assert partial == {"status": "FAILED"}  # live: a run not held still comes out
    (new,) = fold.apply(ShapeResponse([change("insert", "k3", id="new", status="PENDING"), UP]))
    assert new["id"] == "new"
    assert set(fold.rows) == {"k1"}
    fold.apply(ShapeResponse([change("delete", "k1"), UP]))
    assert fold.rows == {}


def test_an_unknown_operation_is_skipped() -> None:
    fold = ShapeFold()
    out = fold.apply(
        ShapeResponse([{"key": "k", "value": {}, "headers": {"operation": "upsert"}}, UP])
    )
    assert out == ()


ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "delete"]),
        st.sampled_from(["k1", "k2", "k3"]),
        st.sampled_from(["PENDING", "EXECUTING", "FAILED", "COMPLETED_SUCCESSFULLY"]),
    ),
    max_size=40,
)


@given(ops, st.lists(st.integers(0, 40), max_size=6))
def test_the_final_rows_do_not_depend_on_how_the_log_is_split(
    log: list[tuple[str, str, str]], cuts: list[int]
) -> None:
    messages = [change(op, key, status=status) for op, key, status in log]
    whole = ShapeFold()
    whole.apply(ShapeResponse([*messages, UP]))
    split = ShapeFold()
    bounds = sorted({0, len(messages), *(c for c in cuts if c <= len(messages))})
    for start, end in itertools.pairwise(bounds):
        split.apply(ShapeResponse([*messages[start:end], UP]))
    assert split.rows == whole.rows


def test_a_fold_resumes_from_what_it_saved() -> None:
    fold = ShapeFold()
    fold.apply(
        ShapeResponse(
            [change("insert", "k1", id="r1", status="PENDING", runTags="{a}"), UP],
            handle="h1",
            offset="3_0",
            cursor="c9",
            schema=SCHEMA,
        )
    )
    saved = json.loads(json.dumps(fold.to_dict()))  # through the state file's JSON
    again = ShapeFold()
    assert again.restore(saved)
    assert again.cursor == fold.cursor
    assert again.rows == fold.rows
    assert again.schema == fold.schema
    assert not again.synced  # up to date once the server says so again
    (row,) = again.apply(ShapeResponse([change("update", "k1", status="EXECUTING"), UP]))
    assert row == {"id": "r1", "status": "EXECUTING", "runTags": ["a"]}
    bad_saves: list[dict[str, Any]] = [
        {},
        {"handle": 1, "offset": "1_0", "schema": {}, "rows": {}},
        {"rows": []},
    ]
    for bad in bad_saves:
        assert not ShapeFold().restore(bad)
