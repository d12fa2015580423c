"""What the control API answers when a request cannot be applied."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["Rejected", "json_object"]


class Rejected(Exception):
    """A request that cannot be applied; ``status`` is the HTTP answer, ``problems`` why."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = problems


def json_object(body: bytes, what: str) -> dict[str, Any]:
    """The body as a JSON object, else a 400 naming ``what`` it should be."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise Rejected(400, [f"body is not JSON: {exc}"]) from None
    except RecursionError:
        # json's parser recurses per level: a deeply nested body must not be a 500.
        raise Rejected(400, ["body is not usable JSON: nested too deeply"]) from None
    if not isinstance(data, dict):
        raise Rejected(400, [f"body must be a JSON object: {what}"])
    return data
