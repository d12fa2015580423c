"""Watches and silences added at run time through the HTTP API, kept in the state file.

The config file stays the source of truth for what it names: the API cannot change
or remove a watch or silence the file holds, and a reload that adds one to the
file takes it over from the API's entry. API watches and silences may expire; the
expirer removes them when their time is up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import anyio
import structlog

from watcher.clock import Clock
from watcher.config.model import WatcherConfig
from watcher.core.silences import Silence
from watcher.daemon.api_errors import Rejected
from watcher.daemon.api_silences import ApiSilence, restore_api_silences
from watcher.daemon.api_watches import (
    ApiWatch,
    WatchRequest,
    expired,
    next_expiry,
    restore_api_watches,
)
from watcher.daemon.durability import Durability
from watcher.daemon.outbox import Outbox
from watcher.daemon.state import Stored
from watcher.daemon.watcher import Watcher
from watcher.upstreams.registry import plugin_for

__all__ = ["Overrides"]

log = structlog.get_logger("watcher.daemon")


class SharedEntries(Protocol):
    """Where a cluster keeps what the API added, for every replica."""

    async def put_entry(self, table: str, ident: str, entry: dict[str, Any] | None) -> None:
        """Keep (or with ``None`` forget) an entry of ``table``."""
        ...


class Overrides:
    """The API's watches and silences: added, removed, expired, restored after a restart."""

    def __init__(
        self,
        config: Callable[[], WatcherConfig],
        clock: Clock,
        durability: Durability,
        outbox: Outbox,
    ) -> None:
        self._config = config
        self.clock = clock
        self.durability = durability
        self.outbox = outbox
        self.watcher: Watcher | None = None
        """The running watcher (set once built; the API answers 503 before)."""
        self.watches: dict[str, ApiWatch] = {}
        self.silences: dict[str, ApiSilence] = {}
        self._changed = anyio.Event()
        self.shared: SharedEntries | None = None
        """With ``cluster:``, silences added here hold on every replica."""

    def file_keys(self, config: WatcherConfig | None = None) -> set[str]:
        """The keys of the watches in the config file."""
        return {w.ref().key for w in (config or self._config()).watches}

    # -- restart ----------------------------------------------------------------------------

    def restore(self, watcher: Watcher, stored: Stored) -> None:
        """Take back the API's watches (not those the file now holds) and silences."""
        self.watcher = watcher
        configured = self.file_keys()
        for key, api in restore_api_watches(stored.api_watches).items():
            if key in configured or key in watcher.registry:
                continue
            self.watches[key] = api
            watcher.add(api.watch)
        if self.watches:
            log.info("watches added through the API restored", watches=len(self.watches))
        self.silences = restore_api_silences(stored.api_silences, self.clock.wall())
        self.install_silences(self._config())

    # -- watches ----------------------------------------------------------------------------

    async def add_watch(self, request: WatchRequest) -> bool:
        """Add (or update) a watch from ``POST /watches``; whether it was created."""
        watcher = self.watcher
        if watcher is None:
            raise Rejected(503, ["the daemon is starting"])
        config = self._config()
        watch = request.watch
        key = watch.ref().key
        if key in self.file_keys(config):
            raise Rejected(409, [f"{key} is in the config file; change it there"])
        source = watch.ref().source
        if not watcher.can_poll(source):
            variable = plugin_for(source).credential.variable
            raise Rejected(422, [f"type: {watch.type} needs {variable}, which is not set"])
        created = key not in self.watches
        if created and len(self.watches) >= config.http.max_api_watches:
            raise Rejected(409, [f"http.max_api_watches ({config.http.max_api_watches}) reached"])
        expires_at = (
            self.clock.wall().timestamp() + request.expire_after
            if request.expire_after is not None
            else None
        )
        self.watches[key] = ApiWatch(watch, request.entry, expires_at)
        await self.durability.api_watch(key, request.entry, expires_at)
        if created:
            watcher.add(watch)
            log.info("watch added through the API", watch=key, expires_at=expires_at)
        else:
            watcher.update(watch)
            log.info("watch updated through the API", watch=key, expires_at=expires_at)
        self._changed.set()
        return created

    async def remove_watch(self, key: str, *, reason: str = "removed through the API") -> None:
        """Stop a watch the API added (``DELETE /watches/{type}/{id}``, or expiry)."""
        if key not in self.watches:
            if key in self.file_keys():
                raise Rejected(409, [f"{key} is in the config file: remove it there, then reload"])
            raise Rejected(404, [f"no watch {key} was added through the API"])
        del self.watches[key]
        await self.outbox.forget(self.watcher.remove(key) if self.watcher is not None else [])
        await self.durability.api_watch(key, None)
        log.info(f"watch {reason}; polling stops", watch=key)

    async def yield_to_file(self, config: WatcherConfig) -> None:
        """A reloaded file now holds some API watches: it takes them over."""
        keys = self.file_keys(config)
        for key in [k for k in self.watches if k in keys]:
            del self.watches[key]
            await self.durability.api_watch(key, None)

    # -- silences ---------------------------------------------------------------------------

    def all_silences(self, config: WatcherConfig) -> list[Silence]:
        """The file's silences and the API's."""
        return [
            *(s.silence(i) for i, s in enumerate(config.silences)),
            *(a.silence() for a in self.silences.values()),
        ]

    def install_silences(self, config: WatcherConfig) -> None:
        """Hand the dispatcher the silences now in force."""
        self.outbox.dispatcher.silences = tuple(self.all_silences(config))

    def silence_views(self) -> list[dict[str, object]]:
        """Every silence, from the file and the API, for ``GET /silences``."""
        now = self.clock.wall()
        views: list[dict[str, object]] = []
        for index, cfg in enumerate(self._config().silences):
            silence = cfg.silence(index)
            views.append(
                {
                    "id": silence.id,
                    "origin": "config",
                    "match": cfg.match,
                    "starts_at": cfg.starts_at.isoformat() if cfg.starts_at else None,
                    "ends_at": cfg.ends_at.isoformat() if cfg.ends_at else None,
                    "comment": cfg.comment,
                    "active": silence.active(now),
                }
            )
        views += [a.view(now) for a in self.silences.values()]
        return views

    async def add_silence(self, silence: ApiSilence) -> None:
        """Hold back matching events until the silence ends (``POST /silences``)."""
        self.silences[silence.id] = silence
        self.install_silences(self._config())
        await self.durability.api_silence(silence.id, silence.entry)
        await self._share_silence(silence.id, silence.entry)
        self._changed.set()
        log.info(
            "silence added through the API",
            silence=silence.id,
            match=silence.entry["match"],
            ends_at=silence.entry["ends_at"],
            comment=silence.config.comment,
        )

    async def remove_silence(self, ident: str, *, reason: str = "removed through the API") -> None:
        """Lift a silence the API added."""
        if ident not in self.silences:
            config = self._config()
            if any(s.silence(i).id == ident for i, s in enumerate(config.silences)):
                raise Rejected(409, [f"silence {ident} is in the config file"])
            raise Rejected(404, [f"no silence {ident} was added through the API"])
        del self.silences[ident]
        self.install_silences(self._config())
        await self.durability.api_silence(ident, None)
        await self._share_silence(ident, None)
        log.info(f"silence {reason}", silence=ident)

    async def _share_silence(self, ident: str, entry: dict[str, Any] | None) -> None:
        if self.shared is None:
            return
        try:
            await self.shared.put_entry("silences", ident, entry)
        except Exception as exc:  # Redis down: this replica's silence holds here meanwhile
            log.warning("silence not shared with the cluster", silence=ident, error=str(exc))

    def sync_silences(self, entries: Mapping[str, dict[str, Any]]) -> None:
        """Take the cluster's API silences (every replica's ``silence add``) as this one's."""
        now = self.clock.wall()
        current = {ident: a.entry for ident, a in self.silences.items()}
        if current == dict(entries):
            return
        self.silences = restore_api_silences(entries, now)
        self.install_silences(self._config())
        self._changed.set()

    # -- expiry -----------------------------------------------------------------------------

    async def expirer(self) -> None:
        """Remove API watches and silences when their time is up (runs until cancelled)."""
        while True:
            self._changed = anyio.Event()
            now = self.clock.wall()
            for key in expired(self.watches, now.timestamp()):
                await self.remove_watch(key, reason="expired (expire_after)")
            for ident in [i for i, s in self.silences.items() if s.ends_at <= now]:
                await self.remove_silence(ident, reason="ended")
            times = [s.ends_at.timestamp() for s in self.silences.values()]
            if (due := next_expiry(self.watches)) is not None:
                times.append(due)
            wait = max(0.05, min(times) - now.timestamp()) if times else math.inf
            with anyio.move_on_after(min(wait, 3600.0)):
                await self._changed.wait()
