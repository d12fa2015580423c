"""Notifiers run-watcher speaks to itself, beside apprise's: ``pagerduty:`` (Events API
v2) and ``slack:`` (a bot on Slack's Web API). Both keep incidents.

Each takes its secret from exactly one of the value itself, an environment variable
(``*_env``) or a file (``*_file``, e.g. a systemd credential); the secret is masked
in every output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import Field, SecretStr, field_validator, model_validator

from watcher.clock import Clock
from watcher.config.base import Strict
from watcher.notify.apprise_sender import Notifier
from watcher.notify.incident_refs import IncidentRefs

__all__ = ["NativeNotifier", "PagerDutyConfig", "SenderParts", "SlackBotConfig", "read_secret"]


def read_secret(what: str, value: SecretStr | None, env: str | None, file: Path | None) -> str:
    """The secret from the one place it is given; ``ValueError`` naming the key if not."""
    if value is not None:
        secret = value.get_secret_value().strip()
    elif env is not None:
        secret = os.environ.get(env, "").strip()
        if not secret:
            raise ValueError(f"{what}_env: environment variable {env} is not set")
    elif file is not None:
        try:
            secret = file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"{what}_file: cannot read {str(file)!r}: {exc.strerror}") from None
    else:  # pragma: no cover - the model validator requires one
        raise ValueError(f"give {what}, {what}_env or {what}_file")
    if not secret:
        raise ValueError(f"{what} is empty")
    return secret


def _exactly_one(what: str, *given: object) -> None:
    if sum(g is not None for g in given) != 1:
        raise ValueError(f"give exactly one of {what}, {what}_env, {what}_file")


@dataclass(frozen=True, slots=True)
class SenderParts:
    """What the daemon gives every native sender: the notifier's stable id, the send
    timeout, where it remembers incidents, the secret scrubber and the clock."""

    ref_id: str
    timeout: float
    refs: IncidentRefs
    scrub: Callable[[str], str]
    clock: Clock


def _http_base(value: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise ValueError(f"expected an http(s) URL, got {value!r}")
    return value.rstrip("/")


class NativeNotifier(Protocol):
    """A notifier section that builds its own sender (the seam beside apprise URLs)."""

    def secret(self) -> str:
        """The credential (``ValueError`` naming the key when missing or malformed)."""
        ...

    def problem(self, secret: str) -> str | None:
        """Why ``secret`` cannot be right, before any request; None if it looks right."""
        ...

    def build(self, secret: str, name: str | None, parts: SenderParts) -> Notifier:
        """The sender."""
        ...


class PagerDutyConfig(Strict):
    """``pagerduty:``: an Events API v2 integration (its routing key)."""

    routing_key: SecretStr | None = None
    routing_key_env: str | None = None
    routing_key_file: Path | None = None
    url: str = "https://events.pagerduty.com"
    """The Events API's base (``/v2/enqueue`` is added); the EU service or a test fake."""
    source: str | None = None
    """``payload.source`` of every page; default: the watch's key."""

    @model_validator(mode="after")
    def _one(self) -> PagerDutyConfig:
        _exactly_one("routing_key", self.routing_key, self.routing_key_env, self.routing_key_file)
        return self

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_base(value)

    def secret(self) -> str:
        """The routing key."""
        return read_secret(
            "routing_key", self.routing_key, self.routing_key_env, self.routing_key_file
        )

    def problem(self, secret: str) -> str | None:
        """A routing key is 32 letters and digits."""
        from watcher.notify.pagerduty import routing_key_problem

        return routing_key_problem(secret)

    def build(self, secret: str, name: str | None, parts: SenderParts) -> Notifier:
        """A :class:`~watcher.notify.pagerduty.PagerDutyNotifier`."""
        from watcher.notify.pagerduty import PagerDutyNotifier

        return PagerDutyNotifier(
            secret,
            name=name or "pagerduty",
            ref_id=parts.ref_id,
            timeout=parts.timeout,
            url=self.url,
            source=self.source,
            refs=parts.refs,
            scrub=parts.scrub,
            clock=parts.clock,
        )


class SlackBotConfig(Strict):
    """``slack:``: a Slack app's bot token and the channel its incident messages go to."""

    token: SecretStr | None = None
    token_env: str | None = None
    token_file: Path | None = None
    channel: str = Field(min_length=1)
    """A channel id (``C0123ABCD``) or ``#name``; edits use the id Slack answers with."""
    base_url: str = "https://slack.com/api/"
    """Slack's Web API (a test fake in the project's tests)."""

    @model_validator(mode="after")
    def _one(self) -> SlackBotConfig:
        _exactly_one("token", self.token, self.token_env, self.token_file)
        return self

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_base(value) + "/"

    def secret(self) -> str:
        """The bot token."""
        return read_secret("token", self.token, self.token_env, self.token_file)

    def problem(self, secret: str) -> str | None:
        """A bot token starts ``xoxb-``."""
        if not secret.startswith("xoxb-"):
            kind = secret.split("-", 1)[0] if "-" in secret else "unknown"
            return f"a bot token starts with xoxb- (this one is of kind {kind!r})"
        return None

    def build(self, secret: str, name: str | None, parts: SenderParts) -> Notifier:
        """A :class:`~watcher.notify.slack_bot.SlackBotNotifier`."""
        from watcher.notify.slack_bot import SlackBotNotifier

        return SlackBotNotifier(
            secret,
            channel=self.channel,
            name=name or f"slack-bot {self.channel}",
            ref_id=parts.ref_id,
            timeout=parts.timeout,
            base_url=self.base_url,
            refs=parts.refs,
            scrub=parts.scrub,
            clock=parts.clock,
        )
