"""Watches added at run time through the HTTP API: validated, kept, restored and expired."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import TypeAdapter, ValidationError

from watcher.config.loader import explain_errors
from watcher.config.model import WatchConfig
from watcher.core.durations import parse_duration
from watcher.daemon.api_errors import Rejected, json_object

__all__ = [
    "ApiWatch",
    "WatchRequest",
    "expired",
    "next_expiry",
    "parse_watch_request",
    "restore_api_watches",
]

log = structlog.get_logger("watcher.api")

_WATCH: TypeAdapter[WatchConfig] = TypeAdapter(WatchConfig)


@dataclass(frozen=True, slots=True)
class ApiWatch:
    """A watch the API added; ``expires_at`` is Unix time (None: until removed)."""

    watch: WatchConfig
    entry: dict[str, Any]
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class WatchRequest:
    """A validated ``POST /watches`` body."""

    watch: WatchConfig
    expire_after: float | None
    entry: dict[str, Any]
    """The entry as sent, minus ``expire_after`` (what the state file keeps)."""


def parse_watch_request(body: bytes, max_expire_after: float) -> WatchRequest:
    """Validate a ``POST /watches`` body exactly as a config entry, plus ``expire_after``."""
    data = json_object(body, "a watches entry of the config")
    expire_after: float | None = None
    if "expire_after" in data:
        raw = data.pop("expire_after")
        try:
            expire_after = parse_duration(raw) if raw is not None else None
        except (ValueError, TypeError) as exc:
            raise Rejected(422, [f"expire_after: {exc}"]) from None
        if expire_after is not None and not 0 < expire_after <= max_expire_after:
            raise Rejected(
                422,
                [f"expire_after: must be above 0 and at most {max_expire_after:g}s"],
            )
    try:
        watch = _WATCH.validate_python(data)
    except ValidationError as exc:
        raise Rejected(422, explain_errors(exc)) from None
    return WatchRequest(watch, expire_after, data)


def expired(watches: Mapping[str, ApiWatch], now: float) -> list[str]:
    """Keys of the watches whose ``expires_at`` is not after ``now`` (Unix time)."""
    return [k for k, w in watches.items() if w.expires_at is not None and w.expires_at <= now]


def next_expiry(watches: Mapping[str, ApiWatch]) -> float | None:
    """The earliest ``expires_at``, if any watch has one."""
    times = [w.expires_at for w in watches.values() if w.expires_at is not None]
    return min(times) if times else None


def restore_api_watches(
    stored: Mapping[str, tuple[dict[str, Any], float | None]],
) -> dict[str, ApiWatch]:
    """Validate the stored entries again (the config model may have changed since)."""
    out: dict[str, ApiWatch] = {}
    for key, (entry, expires_at) in stored.items():
        try:
            watch = _WATCH.validate_python(entry)
        except ValidationError as exc:
            log.warning(
                "stored API watch no longer valid; dropped", watch=key, problems=explain_errors(exc)
            )
            continue
        out[watch.ref().key] = ApiWatch(watch, entry, expires_at)
    return out
