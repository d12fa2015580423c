from __future__ import annotations

import pytest

from watcher.core.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        (" 2S ", 2.0),
        ("1.5s", 1.5),
        ("10", 10.0),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration_accepts_units_and_numbers(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad", ["", "2x", "s", "-1s", "1h30", "ms500", -5, float("inf"), True, None, [1]]
)
def test_parse_duration_rejects_garbage_with_a_message(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.5, "500ms"), (2, "2s"), (90, "1m30s"), (3600, "1h"), (86461, "1d1m1s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
