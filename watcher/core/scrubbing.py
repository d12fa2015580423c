"""Masking known secrets in any text or value: the one mechanism behind every output.

The daemon keeps one :data:`watcher.daemon.logging.SCRUBBER` for logs, messages, HTTP
answers and the CLI; each upstream client keeps its own for the credentials it sends.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

__all__ = ["Scrubber"]


class Scrubber:
    """Replaces known secret strings with ``***`` in any value."""

    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, secrets: Iterable[str]) -> None:
        """Register more secrets; longest first so that parts do not leave tails."""
        new = {s for s in secrets if s and len(s) >= 4}
        self._secrets = sorted(set(self._secrets) | new, key=len, reverse=True)

    def discard(self, values: Iterable[str]) -> None:
        """Forget ``values``: they turned out not to be secret."""
        gone = set(values)
        self._secrets = [s for s in self._secrets if s not in gone]

    def clear(self) -> None:
        """Forget every secret (tests)."""
        self._secrets = []

    def text(self, value: str) -> str:
        """``value`` with every secret masked."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, "***")
        return value

    def value(self, value: Any) -> Any:
        """Scrub strings inside containers too."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        return value

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """structlog processor."""
        if not self._secrets:
            return event_dict
        for key, value in list(event_dict.items()):
            event_dict[key] = self.value(value)
        return event_dict
