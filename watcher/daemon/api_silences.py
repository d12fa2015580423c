"""Silences added at run time through the HTTP API (``run-watcher silence add``).

The body is an entry of the config's ``silences`` plus ``duration`` (a shortcut
for ``ends_at``); unlike the file's, an API silence must end: a forgotten
"temporary" silence that holds forever is how pages go missing.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from watcher.config.loader import explain_errors
from watcher.config.notifications import SilenceConfig
from watcher.core.durations import parse_duration
from watcher.core.silences import Silence
from watcher.daemon.api_errors import Rejected, json_object

__all__ = ["ApiSilence", "parse_silence_request", "restore_api_silences"]

log = structlog.get_logger("watcher.api")


@dataclass(frozen=True, slots=True)
class ApiSilence:
    """A silence the API added."""

    id: str
    config: SilenceConfig
    entry: dict[str, Any]

    def silence(self) -> Silence:
        """The core silence, under its API id."""
        return self.config.model_copy(update={"name": self.id}).silence(0)

    @property
    def ends_at(self) -> datetime:
        """When it stops holding (API silences always end)."""
        assert self.config.ends_at is not None
        return self.config.ends_at

    def view(self, now: datetime) -> dict[str, Any]:
        """As ``GET /silences`` shows it."""
        return {
            "id": self.id,
            "origin": "api",
            "match": self.entry["match"],
            "starts_at": self.entry.get("starts_at"),
            "ends_at": self.entry["ends_at"],
            "comment": self.config.comment,
            "active": self.silence().active(now),
        }


def parse_silence_request(body: bytes, now: datetime, max_duration: float) -> ApiSilence:
    """Validate a ``POST /silences`` body like a config entry; give it an id."""
    data = json_object(body, "a silences entry of the config")
    if "duration" in data:
        try:
            seconds = parse_duration(data.pop("duration"))
        except (ValueError, TypeError) as exc:
            raise Rejected(422, [f"duration: {exc}"]) from None
        if "ends_at" in data:
            raise Rejected(422, ["give duration or ends_at, not both"])
        data["ends_at"] = (now + timedelta(seconds=seconds)).isoformat()
    data.pop("name", None)
    try:
        config = SilenceConfig.model_validate(data)
    except ValidationError as exc:
        raise Rejected(422, explain_errors(exc)) from None
    if config.ends_at is None:
        raise Rejected(422, ["ends_at: an API silence must end: give duration or ends_at"])
    if config.ends_at <= now:
        raise Rejected(422, ["ends_at: already past"])
    if (config.ends_at - now).total_seconds() > max_duration:
        raise Rejected(422, [f"ends_at: at most {max_duration:g}s from now"])
    entry = config.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    entry["ends_at"] = config.ends_at.isoformat()
    return ApiSilence(f"sil_{secrets.token_hex(4)}", config, entry)


def restore_api_silences(
    stored: Mapping[str, dict[str, Any]], now: datetime
) -> dict[str, ApiSilence]:
    """The stored silences still valid and not over."""
    out: dict[str, ApiSilence] = {}
    for ident, entry in stored.items():
        try:
            config = SilenceConfig.model_validate(entry)
        except ValidationError as exc:
            log.warning(
                "stored silence no longer valid; dropped",
                silence=ident,
                problems=explain_errors(exc),
            )
            continue
        if config.ends_at is not None and config.ends_at > now:
            out[ident] = ApiSilence(ident, config, entry)
    return out
