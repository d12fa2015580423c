"""ElectricSQL's shape log, folded: change messages in, complete rows out (pure).

A shape stream answers each request with a JSON array of messages: changes
(``{key, value, headers: {operation: insert|update|delete}}``; an update carries
only the columns that changed) and controls (``{headers: {control:
up-to-date|must-refetch}}``). Changes take effect once a batch ends up to date (the
``up-to-date`` message, or the response's ``electric-up-to-date`` header), as the
official client applies them; only then does a row that changed come out, once, at
its latest state. ``must-refetch`` (or a 409) means the shape was reset: every row
is dropped and the next request starts again at offset ``-1``.

Values arrive as Postgres text; the ``electric-schema`` header names each column's
type, and :func:`parse_value` reads them as Electric's own client does (``t``/``f``
booleans, numbers, JSON, ``{a,b}`` arrays; any other type stays text).

:class:`ShapeFold` keeps state between responses (the rows, the cursor) but does no
I/O and reads no clock: the worker that fetches feeds it each response.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "INITIAL_OFFSET",
    "Column",
    "ShapeCursor",
    "ShapeFold",
    "ShapeResponse",
    "parse_schema",
    "parse_value",
]

INITIAL_OFFSET = "-1"
"""The offset of a first request: the whole shape, then the log."""

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the shape's schema (``dims`` > 0: an array)."""

    type: str
    dims: int = 0


@dataclass(frozen=True, slots=True)
class ShapeCursor:
    """Where a shape stream stands: its handle, the offset to ask from, the live cursor."""

    handle: str | None = None
    offset: str = INITIAL_OFFSET
    cursor: str | None = None

    @property
    def initial(self) -> bool:
        """No snapshot read yet: the next request asks for the whole shape."""
        return self.offset == INITIAL_OFFSET


@dataclass(frozen=True, slots=True)
class ShapeResponse:
    """One response: its messages and the headers that move the cursor."""

    messages: Sequence[Mapping[str, Any]]
    handle: str | None = None
    offset: str | None = None
    cursor: str | None = None
    up_to_date: bool = False
    """The ``electric-up-to-date`` header."""
    schema: Mapping[str, Column] | None = None


def parse_schema(text: str | None) -> dict[str, Column] | None:
    """The ``electric-schema`` header: column -> type (None when absent or unreadable)."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    schema: dict[str, Column] = {}
    for name, info in data.items():
        if isinstance(info, dict) and isinstance(info.get("type"), str):
            dims = info.get("dims")
            schema[str(name)] = Column(info["type"], dims if isinstance(dims, int) else 0)
    return schema


def _scalar(value: str, kind: str) -> Any:
    match kind:
        case "bool":
            return value in ("t", "true")
        case "int2" | "int4" | "int8":
            return int(value)
        case "float4" | "float8" | "numeric":
            return float(value)
        case "json" | "jsonb":
            return json.loads(value)
        case _:
            return value


def _pg_array(text: str) -> list[str | None]:
    """A one-dimensional Postgres array literal: ``{a,"b c",NULL}``."""
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"not an array literal: {text[:40]!r}")
    inner = text[1:-1]
    items: list[str | None] = []
    i, n = 0, len(inner)
    while i < n:
        if inner[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and inner[i] != '"':
                if inner[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(inner[i])
                i += 1
            items.append("".join(chars))
            i += 2  # the closing quote, then the comma
        else:
            end = inner.find(",", i)
            end = n if end == -1 else end
            raw = inner[i:end]
            items.append(None if raw == "NULL" else raw)
            i = end + 1
    return items


def parse_value(value: Any, column: Column | None) -> Any:
    """One column's text as its type says; unknown types stay text; bad text raises
    ``ValueError`` (the caller takes the response as malformed)."""
    if not isinstance(value, str) or column is None:
        return value
    if column.dims > 0:
        return [None if v is None else _scalar(v, column.type) for v in _pg_array(value)]
    return _scalar(value, column.type)


class ShapeFold:
    """The rows of one shape, folded from its responses.

    ``keep(row)`` decides which inserted rows are held (the others are dropped: an
    environment-wide shape may name many runs nobody follows). Once the shape is up to
    date, a change of a row not held comes out as it is (for an update, only its changed
    columns), for the caller to notice; during the snapshot such rows are dropped.

    ``trail`` names a column whose value before the batch and every value the batch
    sets are kept, in order, beside the row that comes out (:attr:`trails`; ``None``
    first for a row new to the fold): a row comes out at its latest, and the
    caller may need to know what it passed through on the way (a status that came and
    went between two reads).
    """

    def __init__(
        self, keep: Callable[[Row], bool] = lambda row: True, *, trail: str | None = None
    ) -> None:
        self.keep = keep
        self.trail = trail
        self.size = 0
        """Rows in the shape, held or not (inserts less deletes): what listing it costs."""
        self.trails: tuple[tuple[Any, ...], ...] = ()
        """For each row the last :meth:`apply` returned: its ``trail`` value before the
        batch, then each value the batch set."""
        self.cursor = ShapeCursor()
        self.rows: dict[str, dict[str, Any]] = {}
        self.schema: dict[str, Column] = {}
        self.synced = False
        """A batch ended up to date since the last reset: the rows are the shape's state."""
        self._changed: dict[str, dict[str, Any]] = {}
        self._trail: dict[str, list[Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        """What a restart needs to resume the shape where it stood (JSON-ready)."""
        return {
            "handle": self.cursor.handle,
            "offset": self.cursor.offset,
            "cursor": self.cursor.cursor,
            "schema": {name: [c.type, c.dims] for name, c in self.schema.items()},
            "rows": self.rows,
            "size": self.size,
        }

    def restore(self, data: Mapping[str, Any]) -> bool:
        """Take back :meth:`to_dict`'s output; False (and nothing changed) when unusable."""
        try:
            handle, offset, cursor = data["handle"], data["offset"], data.get("cursor")
            schema = {str(n): Column(str(t), int(d)) for n, (t, d) in data["schema"].items()}
            rows = {str(k): dict(v) for k, v in data["rows"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        if not isinstance(handle, str) or not isinstance(offset, str):
            return False
        self.cursor = ShapeCursor(handle, offset, cursor if isinstance(cursor, str) else None)
        self.schema, self.rows = schema, rows
        self.size = max(len(rows), _int(data.get("size")))
        self._changed.clear()
        self._trail.clear()
        self.trails = ()
        self.synced = False
        return True

    def reset(self, handle: str | None = None) -> None:
        """The shape is gone (409, ``must-refetch``): start again from offset ``-1``."""
        self.cursor = ShapeCursor(handle)
        self.rows.clear()
        self.size = 0
        self._changed.clear()
        self._trail.clear()
        self.trails = ()
        self.synced = False

    def apply(self, response: ShapeResponse) -> tuple[Row, ...]:
        """Apply one response; the rows that changed, at their latest, once it is up to date."""
        if response.schema is not None:
            self.schema = dict(response.schema)
        up_to_date = response.up_to_date
        for message in response.messages:
            headers = message.get("headers") or {}
            if "key" not in message:
                control = headers.get("control")
                if control == "must-refetch":
                    self.reset(response.handle)
                    return ()
                up_to_date = up_to_date or control == "up-to-date"
                continue
            key = str(message["key"])
            value = message.get("value") or {}
            match headers.get("operation"):
                case "delete":
                    self.size -= 1
                    self.rows.pop(key, None)
                    self._changed.pop(key, None)
                    self._trail.pop(key, None)
                case "insert" | "update" as operation:
                    parsed = {
                        name: parse_value(v, self.schema.get(name)) for name, v in value.items()
                    }
                    held = self.rows.get(key)
                    if operation == "insert" and held is None:
                        self.size += 1
                    if self.trail is not None and key not in self._trail:
                        # Where the row stood before this batch first touched it.
                        before = held.get(self.trail) if held is not None else None
                        self._trail[key] = [before]
                    if held is not None:
                        held.update(parsed)
                        self._changed[key] = held
                    elif operation == "insert" and self.keep(parsed):
                        self.rows[key] = parsed
                        self._changed[key] = parsed
                    elif self.synced:
                        # Live: a run not held appeared or moved; it comes out once.
                        self._changed[key] = parsed
                    else:
                        # A snapshot's rows not held are dropped at once: a large
                        # environment must not cost a row per run, even briefly.
                        self._trail.pop(key, None)
                        continue
                    if self.trail is not None and self.trail in parsed:
                        self._trail[key].append(parsed[self.trail])
                case _:
                    continue  # an operation this client does not know: skip it
        self.cursor = ShapeCursor(
            response.handle or self.cursor.handle,
            response.offset or self.cursor.offset,
            response.cursor or self.cursor.cursor,
        )
        if not up_to_date:
            self.trails = ()
            return ()
        self.synced = True
        out = tuple(self._changed.values())
        self.trails = tuple(tuple(self._trail.get(key, ())) for key in self._changed)
        self._changed.clear()
        self._trail.clear()
        return out


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
