"""The incidents the API and the CLI see: this daemon's, and with ``cluster:`` every
replica's.

An incident lives with the replica that holds its watch. Asked of another replica,
an acknowledgement is left in Redis (``acks``) and applied by the holder at its next
tick (within a third of the lease); the answer is 202 and says so. The listing merges
the open incidents every replica shares in Redis.
"""

from __future__ import annotations

from typing import Any

import structlog

from watcher.core.conditions import Condition
from watcher.core.incidents import IncidentError, find, incident_id, incident_view
from watcher.daemon.api_errors import Rejected
from watcher.daemon.cluster import Cluster
from watcher.daemon.cluster_redis import RedisUnavailable
from watcher.notify.dispatcher import Dispatcher
from watcher.notify.serialize import condition_from_dict

__all__ = ["IncidentDesk"]

log = structlog.get_logger("watcher.api")

_PENDING = "the replica that holds this incident applies it within a few seconds"


class IncidentDesk:
    """Lists and acknowledges incidents, across the cluster when there is one."""

    def __init__(self, dispatcher: Dispatcher, cluster: Cluster | None = None) -> None:
        self.dispatcher = dispatcher
        self.cluster = cluster

    async def _shared(self) -> list[Condition]:
        """The open conditions of every replica (empty without a cluster or Redis)."""
        if self.cluster is None:
            return []
        try:
            stored = await self.cluster.shared_conditions()
        except RedisUnavailable:
            return []
        out = []
        for data in stored.values():
            try:
                out.append(condition_from_dict(data))
            except (KeyError, ValueError, TypeError):
                continue
        return out

    async def incidents(self, open_only: bool = False) -> list[dict[str, Any]]:
        """Open incidents (every replica's), oldest first, then this one's latest resolved."""
        views = self.dispatcher.incidents(open_only=True)
        here = {v["id"] for v in views}
        for condition in await self._shared():
            if incident_id(condition) not in here:
                view = incident_view(condition, timeline=True)
                view["elsewhere"] = True  # held by another replica
                views.append(view)
                here.add(view["id"])
        views.sort(key=lambda v: str(v["opened_at"]))
        if not open_only:
            views.extend(reversed(self.dispatcher.resolved))
        return views

    async def _elsewhere(self, ref: str, exc: IncidentError) -> Condition:
        if self.cluster is None or exc.problem != "unknown":
            raise exc
        shared = [c for c in await self._shared() if c.key not in self.dispatcher.conditions.open]
        return find(shared, ref)

    async def acknowledge(
        self, ref: str, by: str, note: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """200 and the incident acknowledged here, or 202 when another replica holds it."""
        try:
            return 200, await self.dispatcher.acknowledge(ref, by, note)
        except IncidentError as exc:
            condition = await self._elsewhere(ref, exc)
        return 202, await self._ask(condition, {"by": by, "note": note})

    async def unacknowledge(self, ref: str) -> tuple[int, dict[str, Any]]:
        """200 and the incident open again here, or 202 when another replica holds it."""
        try:
            return 200, await self.dispatcher.unacknowledge(ref)
        except IncidentError as exc:
            condition = await self._elsewhere(ref, exc)
        if condition.ack is None:
            raise IncidentError(
                f"incident {incident_id(condition)} is not acknowledged", "conflict"
            )
        return 202, await self._ask(condition, {"undo": True})

    async def _ask(self, condition: Condition, request: dict[str, Any]) -> dict[str, Any]:
        assert self.cluster is not None
        ident = incident_id(condition)
        try:
            await self.cluster.ask(ident, request)
        except RedisUnavailable as exc:
            raise Rejected(
                503, [f"incident {ident} is held by another replica, and {exc}"]
            ) from None
        view = incident_view(condition, timeline=True)
        view["pending"] = _PENDING
        return view

    async def apply_requests(self, asked: dict[str, dict[str, Any]]) -> set[str]:
        """Apply the acknowledgements asked on other replicas for incidents held here."""
        held = {incident_id(c) for c in self.dispatcher.conditions.open.values()}
        applied = set()
        for ident, request in asked.items():
            if ident not in held:
                continue
            try:
                if request.get("undo"):
                    await self.dispatcher.unacknowledge(ident)
                else:
                    await self.dispatcher.acknowledge(
                        ident, str(request.get("by") or "?"), request.get("note")
                    )
                log.info("incident acknowledgement applied for another replica", incident=ident)
            except IncidentError as exc:
                log.info("incident acknowledgement not applicable", incident=ident, reason=str(exc))
            applied.add(ident)
        return applied
