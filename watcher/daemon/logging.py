"""structlog set-up: JSON lines off a terminal, readable lines on one, secrets scrubbed.

Every log line, ours and the libraries' (through the stdlib bridge), passes the
:class:`Scrubber`, which replaces any registered secret (API keys, apprise URLs
and their token parts) wherever it appears.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO

import structlog

__all__ = ["SCRUBBER", "ScrubbedStream", "Scrubber", "configure_logging"]

LogFormat = Literal["auto", "json", "console"]


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


SCRUBBER = Scrubber()


class ScrubbedStream(io.TextIOBase):
    """A text stream that masks registered secrets in everything written to it."""

    def __init__(self, stream: TextIO, scrubber: Scrubber) -> None:
        self._stream = stream
        self._scrubber = scrubber

    def write(self, text: str) -> int:
        """Write ``text`` with its secrets masked (returns the length given, as callers expect)."""
        self._stream.write(self._scrubber.text(text))
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self._stream.flush()

    def isatty(self) -> bool:
        """Whether the wrapped stream is a terminal (colour and format choices)."""
        return self._stream.isatty()

    def fileno(self) -> int:
        """The wrapped stream's descriptor."""
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        """The wrapped stream's encoding."""
        return self._stream.encoding


def _render_exception_then_scrub(
    logger: Any, name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict = structlog.processors.format_exc_info(logger, name, event_dict)
    return SCRUBBER(logger, name, event_dict)


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog and route the stdlib loggers of httpx/apprise through it."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _render_exception_then_scrub,
    ]
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # httpx logs every request at INFO.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric))
    # apprise's own log is captured per send by the notifier (apprise_sender), which
    # sets its logger up; it is not printed here.
