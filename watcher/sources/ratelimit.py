"""Read what a server says about waiting: ``Retry-After`` and rate-limit counters. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["RateCounters", "rate_counters", "retry_after"]


@dataclass(frozen=True, slots=True)
class RateCounters:
    """``x-ratelimit-*``: requests left and seconds until the window resets."""

    limit: int | None
    remaining: int | None
    reset_in: float | None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


def _reset_in(value: str | None, now_epoch: float) -> float | None:
    """``x-ratelimit-reset`` as seconds from now.

    Trigger.dev sends Unix milliseconds; other APIs send Unix seconds or a
    number of seconds. Tell them apart by magnitude.
    """
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number > 1e11:  # Unix milliseconds
        return max(0.0, number / 1000.0 - now_epoch)
    if number > 1e9:  # Unix seconds
        return max(0.0, number - now_epoch)
    return max(0.0, number)


def rate_counters(headers: Mapping[str, str], now_epoch: float) -> RateCounters:
    """The rate-limit counters of a response, where the server sends them."""
    return RateCounters(
        limit=_int(headers.get("x-ratelimit-limit")),
        remaining=_int(headers.get("x-ratelimit-remaining")),
        reset_in=_reset_in(headers.get("x-ratelimit-reset"), now_epoch),
    )


def retry_after(headers: Mapping[str, str], body: bytes, now_epoch: float) -> float | None:
    """How long the server asks us to wait, in seconds, from the first of:

    ``retry-after-ms``; ``Retry-After`` (seconds or an HTTP date);
    ``x-ratelimit-reset`` (Trigger.dev, Unix ms); a problem+json body's
    ``secondsUntilReset`` (Trigger.dev's 429).
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is not None:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now_epoch)
            except (TypeError, ValueError, IndexError, OverflowError):
                pass
    reset = _reset_in(headers.get("x-ratelimit-reset"), now_epoch)
    if reset is not None:
        return reset
    if body:
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        if isinstance(payload, dict):
            seconds = payload.get("secondsUntilReset")
            if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
                return float(seconds)
    return None
