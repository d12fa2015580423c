"""Shared building blocks of the config models: strictness and durations."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from watcher.core.durations import parse_duration
from watcher.core.ids import validate_id
from watcher.core.statuses import (
    TRIGGER_API_VERSIONS,
    TRIGGER_CURRENT_API_VERSION,
    TriggerApiVersion,
)

__all__ = ["ApiVersion", "Duration", "PositiveDuration", "Strict", "UpstreamId"]

# The schema shows what the file may say ("500ms", "2s", "5m", "1h" or seconds),
# not the float it becomes.
_DURATION_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ms|s|m|h|d)?)+\s*$"},
        ],
        "description": 'a duration: "500ms", "2s", "5m", "1h" or a number of seconds',
    }
)
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0), _DURATION_SCHEMA]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0), _DURATION_SCHEMA]


def _api_version(value: object) -> object:
    if value not in TRIGGER_API_VERSIONS:
        raise ValueError(
            f"{value!r} is not an API version run-watcher can rely on: Trigger.dev selects "
            f"its current status set only for exactly {TRIGGER_CURRENT_API_VERSION!r} and "
            "silently serves the legacy one (REATTEMPTING, FROZEN, ...) for any other value; "
            f"use {TRIGGER_CURRENT_API_VERSION!r} or 'legacy' (no header: the legacy statuses)"
        )
    return value


ApiVersion = Annotated[
    TriggerApiVersion,
    BeforeValidator(_api_version),
    WithJsonSchema({"enum": list(TRIGGER_API_VERSIONS)}),
]
"""``x-trigger-api-version``: a known value only, with an error that says why."""
UpstreamId = Annotated[str, BeforeValidator(lambda v: validate_id(v) if isinstance(v, str) else v)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
