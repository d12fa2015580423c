"""Where notifiers that keep incidents remember them: a page triggered, a Slack message's
channel id and ``ts``, the thread replies posted.

Each entry is keyed by the notifier's stable id and the incident's id, so a restart
(the state file) or another replica (a cluster's Redis) edits the same Slack message
and never triggers the same page twice.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

__all__ = ["IncidentRefs", "MemoryRefs"]


class IncidentRefs(Protocol):
    """A small key-value store of what each notifier did for each incident."""

    async def get(self, notifier: str, incident: str) -> dict[str, Any] | None:
        """What ``notifier`` recorded for ``incident``; None if nothing."""
        ...

    async def put(self, notifier: str, incident: str, data: dict[str, Any] | None) -> None:
        """Record (or with None forget) ``data``."""
        ...


class MemoryRefs:
    """Refs kept in memory: one-off sends, tests, and a daemon without a state file."""

    def __init__(self, limit: int = 10_000) -> None:
        self._data: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._limit = limit

    async def get(self, notifier: str, incident: str) -> dict[str, Any] | None:
        """The entry, if any."""
        found = self._data.get((notifier, incident))
        return dict(found) if found is not None else None

    async def put(self, notifier: str, incident: str, data: dict[str, Any] | None) -> None:
        """Keep the latest ``limit`` entries."""
        key = (notifier, incident)
        if data is None:
            self._data.pop(key, None)
            return
        self._data[key] = dict(data)
        self._data.move_to_end(key)
        while len(self._data) > self._limit:
            self._data.popitem(last=False)
