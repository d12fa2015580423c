"""The operations sections of the config: the HTTP endpoints and sharding."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from watcher.config.base import Duration, Strict

__all__ = ["DEFAULT_LISTEN", "HttpConfig", "ShardConfig", "is_loopback", "split_listen"]

DEFAULT_LISTEN = "127.0.0.1:9464"
"""Where the endpoints listen unless ``http.listen`` says otherwise: the CLI looks here
when it is told nothing, so ``run-watcher status`` and a message's silence hint work as
pasted on the daemon's host."""


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6, ``:9464`` for every address) as (host, port).

    Port 0 picks a free port (tests; the log says which).
    """
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT, e.g. 127.0.0.1:9464")
    return host.strip("[]") or "0.0.0.0", int(port)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpConfig(Strict):
    """``/healthz``, ``/readyz``, ``/metrics``, ``/watches`` and the watch API, on loopback
    by default; ``listen: off`` turns them off."""

    listen: str | None = DEFAULT_LISTEN
    """``127.0.0.1:9464`` (the default); ``0.0.0.0:9464`` for probes from outside (needs
    ``WATCHER_API_TOKEN`` for the watch API); ``off`` (or null) for none."""
    watch_api: bool = True
    """``POST /watches`` and ``DELETE /watches/{type}/{id}`` (and ``POST /-/reload``)."""
    max_api_watches: int = Field(default=10_000, ge=1)
    """How many watches the API may add (each is polled and kept in memory)."""
    max_expire_after: Duration = 30 * 86400.0
    """The longest ``expire_after`` the API accepts."""

    @field_validator("listen", mode="before")
    @classmethod
    def _address(cls, value: object) -> str | None:
        if value is None or value is False or str(value).strip().lower() in ("", "off", "false"):
            return None
        split_listen(str(value))
        return str(value)

    @property
    def default_listen(self) -> bool:
        """Listening where nobody asked to: a port in use then means no endpoints, not
        no daemon (a second daemon on the host, a test run)."""
        return "listen" not in self.model_fields_set and self.listen == DEFAULT_LISTEN

    @property
    def listen_host(self) -> str:
        """The host part of ``listen`` ("" when off)."""
        return split_listen(self.listen)[0] if self.listen else ""

    def address(self) -> tuple[str, int] | None:
        """(host, port), or None when the endpoints are off."""
        return split_listen(self.listen) if self.listen else None


class ShardConfig(Strict):
    """This process's shard. Without ``index`` it is the ordinal of the pod name
    (``$HOSTNAME`` of a StatefulSet pod, ``run-watcher-2`` -> 2)."""

    index: int | None = Field(default=None, ge=0)
    count: int = Field(default=1, ge=1, le=1024)

    @model_validator(mode="after")
    def _in_range(self) -> ShardConfig:
        if self.index is not None and self.index >= self.count:
            raise ValueError(f"index {self.index} is not below count {self.count}")
        return self
