"""Shared building blocks of the config models: strictness and durations."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from watcher.core.durations import parse_duration
from watcher.core.ids import validate_id

__all__ = ["Duration", "PositiveDuration", "Strict", "UpstreamId"]

Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
UpstreamId = Annotated[str, BeforeValidator(lambda v: validate_id(v) if isinstance(v, str) else v)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
