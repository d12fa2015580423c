"""What can go wrong talking to an upstream, classified for the health and backoff core.

Exception tree::

    SourceError                 carries a core ``Problem`` (kind, safe message, status, retry-after)
    └── ResponseShapeError      a 200 whose body is not JSON or not the documented shape

Messages name the request (method and path, which hold the watched id) and the
HTTP status; they never hold credentials, request headers or response payloads.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from watcher.core.health import Problem, ProblemKind

__all__ = [
    "ResponseShapeError",
    "SourceError",
    "describe_validation_error",
    "validate",
    "validate_json",
]


class SourceError(Exception):
    """A failed request, with its classification."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class ResponseShapeError(SourceError):
    """The response was not the JSON the API documents."""

    def __init__(self, message: str) -> None:
        super().__init__(Problem(ProblemKind.BAD_RESPONSE, message))


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """Summarise a pydantic error by location, without echoing input values."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any, what: str) -> M:
    """Validate ``data`` as ``model``; a mismatch becomes a ``ResponseShapeError``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ResponseShapeError(
            f"{what}: unexpected response shape: {describe_validation_error(exc)}"
        ) from None


def validate_json(model: type[M], body: bytes, what: str) -> M:
    """Parse and validate ``body`` as ``model`` in one pass (pydantic-core reads the bytes:
    no ``json.loads`` and dict round trip first); malformed JSON and a mismatch each
    become a ``ResponseShapeError`` that says which."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        invalid = next((e for e in exc.errors() if e["type"] == "json_invalid"), None)
        if invalid is not None:
            raise ResponseShapeError(f"{what}: malformed JSON ({invalid['msg']})") from None
        raise ResponseShapeError(
            f"{what}: unexpected response shape: {describe_validation_error(exc)}"
        ) from None
