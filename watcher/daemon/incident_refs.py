"""Incident refs kept where the daemon keeps its state: the state file, or a cluster's
Redis (so another replica edits the same Slack message after a takeover)."""

from __future__ import annotations

import contextlib
from typing import Any

from watcher.daemon.cluster_redis import ClusterRedis, RedisUnavailable
from watcher.daemon.durability import Durability
from watcher.daemon.state import REFS_KEEP
from watcher.notify.incident_refs import MemoryRefs

__all__ = ["ClusterRefs", "DurableRefs"]


class DurableRefs(MemoryRefs):
    """Refs in memory, written through to the state file (read back at start)."""

    def __init__(self, durability: Durability) -> None:
        super().__init__()
        self.durability = durability

    def take(self, stored: dict[tuple[str, str], dict[str, Any]]) -> None:
        """The refs read back from the state file."""
        for (notifier, incident), data in stored.items():
            self._data[(notifier, incident)] = data

    async def put(self, notifier: str, incident: str, data: dict[str, Any] | None) -> None:
        """Keep in memory, then in the state file (when it takes writes)."""
        await super().put(notifier, incident, data)
        await self.durability.incident_ref(notifier, incident, data)


class ClusterRefs(DurableRefs):
    """Refs in the cluster's Redis, so every replica edits the same message. While Redis
    cannot be reached, this replica's own copy answers (a second message beats none)."""

    def __init__(self, durability: Durability, redis: ClusterRedis) -> None:
        super().__init__(durability)
        self.redis = redis

    async def get(self, notifier: str, incident: str) -> dict[str, Any] | None:
        """Redis's copy, else the local one."""
        try:
            found = await self.redis.get_ref(notifier, incident)
        except RedisUnavailable:
            return await super().get(notifier, incident)
        return found if found is not None else await super().get(notifier, incident)

    async def put(self, notifier: str, incident: str, data: dict[str, Any] | None) -> None:
        """Locally (and in the state file), then in Redis (best effort)."""
        await super().put(notifier, incident, data)
        # Kept locally if Redis is away: a takeover may then post a second message, never none.
        with contextlib.suppress(RedisUnavailable):
            await self.redis.put_ref(notifier, incident, data, REFS_KEEP)
