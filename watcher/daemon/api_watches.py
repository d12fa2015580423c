"""Watches added at run time through the HTTP API: what is kept, restored and expired."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import TypeAdapter, ValidationError

from watcher.config.loader import explain_errors
from watcher.config.model import WatchConfig

__all__ = ["ApiWatch", "expired", "next_expiry", "restore_api_watches"]

log = structlog.get_logger("watcher.api")

_WATCH: TypeAdapter[WatchConfig] = TypeAdapter(WatchConfig)


@dataclass(frozen=True, slots=True)
class ApiWatch:
    """A watch the API added; ``expires_at`` is Unix time (None: until removed)."""

    watch: WatchConfig
    entry: dict[str, Any]
    expires_at: float | None = None


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
