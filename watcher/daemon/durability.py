"""The daemon's side of the state file: async calls, and what to do when the disk fails.

A state file that cannot be written (disk full, read-only) must not stop the
watching: the daemon carries on in memory, says once that durability is lost,
and says so again when writes succeed once more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import structlog

from watcher.clock import Clock
from watcher.daemon.state import OutboxRow, StateError, StateStore, Stored, WatchWrite

__all__ = ["Durability"]

log = structlog.get_logger("watcher.state")


class Durability:
    """Wraps an optional :class:`StateStore`; tracks whether writes are getting through."""

    def __init__(self, store: StateStore | None, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.healthy = True
        self.error: str | None = None
        self.failures = 0

    @property
    def enabled(self) -> bool:
        """Whether a state file is configured."""
        return self.store is not None

    def _failed(self, exc: StateError) -> None:
        self.failures += 1
        if self.healthy:
            log.error(
                "state file not writable: durability lost, watching goes on in memory",
                error=str(exc),
            )
        self.healthy = False
        self.error = str(exc)

    def _ok(self) -> None:
        if not self.healthy:
            log.info("state file writable again: durability restored")
        self.healthy = True
        self.error = None

    async def open(self) -> Stored:
        """Open the store and read it back; an unusable file means an empty start, in memory."""
        if self.store is None:
            return Stored()
        try:
            await self.store.call(self.store.open)
            stored: Stored = await self.store.call(self.store.load)
        except StateError as exc:
            self._failed(exc)
            return Stored()
        if self.store.quarantined is not None:
            log.warning(
                "state file damaged: moved aside, starting fresh",
                path=str(self.store.path),
                moved_to=str(self.store.quarantined),
            )
        log.info(
            "state file opened",
            path=str(self.store.path),
            watches=len(stored.watches),
            outbox=len(stored.outbox),
            conditions=len(stored.conditions),
        )
        return stored

    async def commit(
        self,
        watches: Sequence[WatchWrite],
        outbox: Sequence[OutboxRow],
        conditions: Sequence[tuple[str, dict[str, Any] | None]] = (),
    ) -> bool:
        """Write in one transaction. False (and logged once) when the file does not take it."""
        if self.store is None or not (watches or outbox or conditions):
            return True
        if self.store.db_open is False:
            return False
        try:
            await self.store.call(
                self.store.commit, watches, outbox, self.clock.wall().timestamp(), conditions
            )
        except StateError as exc:
            self._failed(exc)
            return False
        self._ok()
        return True

    async def delivered(self, notifier: str, event_ids: Sequence[str]) -> None:
        """A notifier took these events."""
        if self.store is None or not event_ids or self.store.db_open is False:
            return
        try:
            await self.store.call(self.store.delivered, notifier, event_ids)
        except StateError as exc:
            self._failed(exc)
        else:
            self._ok()

    async def api_watch(
        self, key: str, config: dict[str, Any] | None, expires_at: float | None = None
    ) -> bool:
        """Keep (or forget) a watch added through the API. False when not written."""
        return await self._put(lambda store: store.put_api_watch(key, config, expires_at))

    async def api_silence(self, ident: str, config: dict[str, Any] | None) -> bool:
        """Keep (or forget) a silence added through the API. False when not written."""
        return await self._put(lambda store: store.put_api_silence(ident, config))

    async def incident_ref(self, notifier: str, incident: str, data: dict[str, Any] | None) -> bool:
        """Keep (or forget) what a notifier did for an incident. False when not written."""
        return await self._put(lambda store: store.put_incident_ref(notifier, incident, data))

    async def feed(self, name: str, data: dict[str, Any] | None) -> bool:
        """Keep (or forget) where a push feed stands. False when not written."""
        return await self._put(lambda store: store.put_feed(name, data))

    async def _put(self, write: Callable[[StateStore], None]) -> bool:
        store = self.store
        if store is None or store.db_open is False:
            return False
        try:
            await store.call(write, store)
        except StateError as exc:
            self._failed(exc)
            return False
        self._ok()
        return True

    async def forget_notifier(self, notifier: str) -> int:
        """Drop the outbox rows of a notifier that no longer exists."""
        if self.store is None or self.store.db_open is False:
            return 0
        try:
            rows: int = await self.store.call(self.store.forget_notifier, notifier)
        except StateError as exc:
            self._failed(exc)
            return 0
        return rows

    async def close(self) -> None:
        """Close the store."""
        if self.store is not None:
            await self.store.call(self.store.close)
