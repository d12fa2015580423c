from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from watcher.sources.ratelimit import rate_counters, retry_after

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"retry-after-ms": "1500"}, b"", 1.5),
        ({"retry-after": "7"}, b"", 7.0),
        (
            {"retry-after": format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)},
            b"",
            30.0,
        ),
        ({"x-ratelimit-reset": str(int((NOW + 4.5) * 1000))}, b"", 4.5),
        ({}, b'{"title": "Rate Limit Exceeded", "secondsUntilReset": 9}', 9.0),
        ({}, b"", None),
        ({"retry-after": "soon"}, b"not json", None),
    ],
)
def test_retry_after_sources(headers: dict[str, str], body: bytes, expected: float | None) -> None:
    result = retry_after(headers, body, NOW)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_past_dates_mean_now() -> None:
    assert retry_after({"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"}, b"", NOW) == 0.0


def test_rate_counters() -> None:
    counters = rate_counters(
        {
            "x-ratelimit-limit": "750",
            "x-ratelimit-remaining": "12",
            "x-ratelimit-reset": str(int((NOW + 2) * 1000)),
        },
        NOW,
    )
    assert (counters.limit, counters.remaining) == (750, 12)
    assert counters.reset_in == pytest.approx(2.0)
    assert rate_counters({"x-ratelimit-reset": "3"}, NOW).reset_in == 3.0
    assert rate_counters({}, NOW).remaining is None
