"""The protocol every upstream plugin implements, and what it is given to open a client."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Protocol

import httpx
from pydantic import SecretStr

from watcher.config.model import SourceOptions, SourcesConfig
from watcher.config.settings import Settings
from watcher.core.events import Event, WatchType
from watcher.core.snapshots import RunSnapshot
from watcher.core.statuses import Source
from watcher.sources.gate import SourceGate, Ticket
from watcher.sources.http import Upstream

__all__ = ["Credential", "Links", "Opening", "SourceClient", "SourcePlugin"]


@dataclass(frozen=True, slots=True)
class Credential:
    """Where an upstream's key comes from: the variable users set, and how to read it."""

    variable: str
    """``PARALLEL_API_KEY``; also ``{variable}_FILE`` and the systemd credential
    ``{variable}`` in lower case with dashes."""
    read: Callable[[Settings], SecretStr | None]

    @property
    def systemd_name(self) -> str:
        """The ``LoadCredential=`` name the settings read it from."""
        return self.variable.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class Links:
    """Link templates (``{id}``) a watch's notifications carry."""

    url: str | None
    """The watched subject's page."""
    run_url: str | None
    """A run's page (a group's failed runs link to their own)."""


@dataclass(frozen=True, slots=True)
class Opening:
    """What a plugin needs to open its client."""

    sources: SourcesConfig
    settings: Settings
    key: str
    gate: SourceGate
    agent: str
    """The ``user-agent`` of every request."""
    transport: httpx.AsyncBaseTransport | None = None


class SourceClient(Protocol):
    """What every upstream client offers: read one run. Groups and discovery are
    capabilities of the clients that have them."""

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        """The HTTP seams the client uses (metrics observe each)."""
        ...

    async def get_run(self, run_id: str, ticket: Ticket) -> RunSnapshot:
        """One run as a snapshot; :class:`~watcher.sources.errors.SourceError` otherwise."""
        ...


class SourcePlugin(Protocol):
    """One upstream API, as the daemon sees it."""

    @property
    def source(self) -> Source:
        """The source its watches and events name."""
        ...

    @property
    def credential(self) -> Credential:
        """Its key."""
        ...

    def options(self, sources: SourcesConfig) -> SourceOptions:
        """Its section of ``sources:`` (budget, concurrency, timeouts, links)."""
        ...

    def links(self, sources: SourcesConfig, watch_type: WatchType) -> Links:
        """The link templates for a watch of ``watch_type``."""
        ...

    @property
    def listing(self) -> WatchType | None:
        """Its watch type that lists runs by a filter (``trigger_runs``), if it has one: such a
        watch covers every run its filter matches."""
        ...

    def covering_keys(self, event: Event) -> list[str]:
        """The keys of its watches that cover the run ``event`` is about (one run's watch,
        the run's group)."""
        ...

    async def open(self, stack: AsyncExitStack, opening: Opening) -> SourceClient:
        """Open its client (closed with ``stack``)."""
        ...
