"""The ``cluster:`` section: replicas that share work, state and the notification log on Redis."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from watcher.config.base import PositiveDuration, Strict

__all__ = ["ClusterConfig"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_MAX_SECRET = 64 * 1024


class ClusterConfig(Strict):
    """Replicas on one Redis (7 or later) or Valkey: live membership, watches owned by one
    live member each, their state and the notification log shared."""

    redis_url: SecretStr
    """``redis://host:6379/0``, ``rediss://`` for TLS, ``unix:///run/redis.sock``; a
    password in it is masked everywhere (better: ``password_env`` or ``password_file``)."""
    password_env: str | None = None
    """The variable that holds Redis's password (``AUTH``)."""
    password_file: Path | None = None
    """A file (a systemd credential, a Kubernetes secret) that holds Redis's password."""
    name: str | None = None
    """This replica's name, unique in the cluster: default ``$POD_NAME``, else the host name."""
    prefix: str = Field(default="run-watcher:", min_length=1, max_length=64)
    """What every key starts with: several clusters can share one Redis."""
    lease: PositiveDuration = Field(default=15.0, ge=3.0, le=600.0)
    """How long a member key and a watch's lease live without renewal (renewed at a third)."""
    timeout: PositiveDuration = Field(default=2.0, le=30.0)
    """The deadline of every Redis call."""

    @field_validator("redis_url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not redis://, "
                "rediss:// or unix://"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("no host, e.g. redis://127.0.0.1:6379/0")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a name: letters, digits, '.', '_', '-' (63 at most)"
            )
        return value

    @model_validator(mode="after")
    def _one_password(self) -> ClusterConfig:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give at most one of password_env, password_file")
        return self

    def replica_name(self, hostname: str) -> str:
        """This replica's name: ``name``, else ``$POD_NAME``, else ``hostname``."""
        return self.name or os.environ.get("POD_NAME") or hostname.split(".", 1)[0]

    def password(self) -> str | None:
        """Redis's password from ``password_env`` or ``password_file`` (a secret: never log
        it); ``ValueError`` names what could not be read."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if not value:
                raise ValueError(f"cluster.password_env: {self.password_env} is not set")
            return value.strip()
        if self.password_file is not None:
            try:
                data = self.password_file.read_bytes()[: _MAX_SECRET + 1]
            except OSError as exc:
                raise ValueError(
                    f"cluster.password_file: cannot read {str(self.password_file)!r}: "
                    f"{exc.strerror}"
                ) from None
            if not data.strip():
                raise ValueError(f"cluster.password_file: {str(self.password_file)!r} is empty")
            return data.decode("utf-8", errors="strict").strip()
        return None

    def where(self) -> str:
        """Redis's address without credentials (for logs and errors)."""
        parts = urlsplit(self.redis_url.get_secret_value())
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}{parts.path or ''}"
