"""This replica's part in a cluster: it performs what :mod:`watcher.core.membership` decides.

Every ``lease / 3`` a tick renews the member key (the live members come back in the
same call), takes the leases of the watches this member now wins and renews those it
holds (one script for all of them), gives back the ones it no longer wins, and reads
the cluster's silences. A lease newly taken is a takeover: the watch's state is read
from Redis (unless this replica's own copy is fresher, after a fail-open) and the watch
is polled at once. The watcher asks :meth:`Cluster.owns` before every poll and every
publish; the outbox writes states through :meth:`Cluster.write`, which the lease's
epoch fences; the channels claim each send in the notification log first.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import redis.asyncio as aioredis
import structlog

from watcher.clock import Clock
from watcher.config.cluster import ClusterConfig
from watcher.config.loader import ConfigError
from watcher.core.membership import (
    Announce,
    Membership,
    Standing,
    acts_on,
    lease_plan,
    renew_failed,
    renewed,
    speaker,
    standing,
)
from watcher.daemon.cluster_redis import ClusterRedis, RedisUnavailable
from watcher.daemon.logging import SCRUBBER
from watcher.daemon.outbox import Outbox
from watcher.daemon.overrides import Overrides
from watcher.daemon.state import WatchWrite
from watcher.daemon.watcher import Watcher

__all__ = ["Cluster", "build_cluster", "join_cluster"]

log = structlog.get_logger("watcher.cluster")

ACK_KEEP = 600.0
"""An acknowledgement no replica applied in this long (its incident ended) is dropped."""
SENT_KEEP = 86400.0
"""How long the notification log remembers a send (a later copy is dropped meanwhile)."""


def build_cluster(
    config: ClusterConfig, *, hostname: str, clock: Clock, retention: float, send_deadline: float
) -> Cluster:
    """The cluster part of a daemon (no connection yet: :meth:`Cluster.join` opens it)."""
    try:
        password = config.password()
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None
    url = config.redis_url.get_secret_value()
    SCRUBBER.add([p for p in (password, urlsplit(url).password) if p])
    client = aioredis.Redis.from_url(
        url,
        password=password,
        socket_timeout=config.timeout,
        socket_connect_timeout=config.timeout,
        health_check_interval=0,
        retry_on_timeout=False,
        single_connection_client=False,
        max_connections=8,
    )
    name = config.replica_name(hostname)
    redis = ClusterRedis(
        client,
        prefix=config.prefix,
        name=name,
        instance=f"{name}/{uuid.uuid4().hex[:12]}",
        lease=config.lease,
        timeout=config.timeout,
        state_ttl=retention + 86400.0,
        where=config.where(),
    )
    return Cluster(redis, clock, claim_ttl=send_deadline + config.timeout + 5.0)


async def join_cluster(
    cluster: Cluster, watcher: Watcher, outbox: Outbox, overrides: Overrides
) -> None:
    """Connect the cluster to the daemon's parts, then join (``ConfigError`` if it cannot)."""

    async def announce(what: Announce, m: Membership) -> None:
        await outbox.announce_cluster(what is Announce.DEGRADED, cluster.redis.where, m.error)

    cluster.announce = announce
    cluster.on_silences = overrides.sync_silences
    cluster.on_conditions = outbox.take_conditions
    cluster.on_given = outbox.dispatcher.conditions.forget_watch
    cluster.on_owed = outbox.republish
    overrides.shared = cluster.redis
    await cluster.join(watcher)


class Cluster:
    """Membership, ownership, shared state and the notification log of one replica."""

    def __init__(self, redis: ClusterRedis, clock: Clock, *, claim_ttl: float) -> None:
        self.redis = redis
        self.clock = clock
        self.claim_ttl = claim_ttl
        self.name = redis.name
        self.membership = Membership(redis.lease)
        self.held: dict[str, int] = {}
        """Watch key -> the epoch of its lease this replica holds."""
        self.written_at: dict[str, float] = {}
        """When this replica last wrote (or tried to write) each watch's state."""
        self.takeovers = 0
        self.claims: Counter[str] = Counter()
        """Notification log outcomes: ``sent`` (this replica's), ``peer`` (dropped: another
        sent it), ``partial``, ``unavailable`` (fail open)."""
        self.refused_writes = 0
        self.watcher: Watcher | None = None
        self.announce: Callable[[Announce, Membership], Awaitable[None]] | None = None
        self.on_silences: Callable[[dict[str, dict[str, Any]]], None] | None = None
        self.on_conditions: Callable[[dict[str, dict[str, Any]]], None] | None = None
        """Told of the open conditions of watches taken over (their reminders go on here)."""
        self.on_owed: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None
        """Given what dead replicas owed for the watches taken over, to send again."""
        self.on_given: Callable[[str], None] | None = None
        """Told of each watch given back (its conditions are the next holder's now)."""
        self.on_acks: Callable[[dict[str, dict[str, Any]]], Awaitable[set[str]]] | None = None
        """Given the acknowledgements taken on any replica, by incident id; applies those of
        the incidents this replica holds and says which."""
        self._was_open_all = False
        self._tick = anyio.Event()

    # -- what the watcher asks ------------------------------------------------------------------

    def standing(self) -> Standing:
        """What this replica may act on now."""
        return standing(self.membership, self.clock.now())

    def owns(self, key: str) -> bool:
        """Whether this replica polls ``key`` and publishes what it finds, now."""
        return acts_on(key, self.standing(), self.held)

    def adopts(self, key: str) -> bool:
        """Every replica keeps every watch and discovered run, so that any may take one over."""
        return True

    def follows(self, key: str, run_id: str) -> bool:
        """A discovered run has its own lease, under its watch key."""
        return self.owns(key)

    # -- joining, the tick, leaving --------------------------------------------------------------

    async def join(self, watcher: Watcher) -> None:
        """Check Redis, take this replica's name, and its first leases. ``ConfigError``
        (exit 2) when Redis is wrong or unreachable, or the name is taken by a live replica."""
        self.watcher = watcher
        try:
            version = await self.redis.hello()
            deadline = self.clock.now() + self.redis.lease + 1.0
            while isinstance(taken := await self.redis.renew_member(self._info()), str):
                # A replica of this name that died keeps its key until the lease ends.
                if self.clock.now() >= deadline:
                    raise ConfigError(
                        [
                            f"cluster.name: another live replica is named {self.name!r} "
                            f"(instance {taken}); give each replica its own name "
                            "(cluster.name, or POD_NAME)"
                        ]
                    )
                await anyio.sleep(0.5)
        except RedisUnavailable as exc:
            raise ConfigError([f"cluster.redis_url: {exc}"]) from None
        self.membership, _ = renewed(self.membership, self.clock.now(), taken)
        await self.tick(renew_member=False)
        log.info(
            "joined the cluster",
            member=self.name,
            redis=self.redis.where,
            redis_version=version,
            members=list(self.membership.members),
            owned=len(self.held),
        )

    async def run(self) -> None:
        """Renew at a third of the lease until cancelled."""
        every = self.redis.lease / 3
        while True:
            with anyio.move_on_after(every):
                await self._tick.wait()
            self._tick = anyio.Event()
            try:
                await self.tick()
            except Exception:  # a bug must not end the cluster loop: fail open instead
                log.exception("internal error in the cluster tick")

    def poke(self) -> None:
        """Tick now (a watch was added, an acknowledgement was asked for)."""
        self._tick.set()

    async def _acks(
        self, apply: Callable[[dict[str, dict[str, Any]]], Awaitable[set[str]]]
    ) -> None:
        """Apply the acknowledgements asked of incidents held here; drop the stale."""
        asked = await self.redis.entries("acks")
        if not asked:
            return
        done = await apply(asked)
        now = time.time()
        done |= {i for i, a in asked.items() if now - float(a.get("at") or 0) > ACK_KEEP}
        if done:
            await self.redis.put_entries("acks", [(i, None) for i in done])

    async def ask(self, incident: str, request: dict[str, Any]) -> None:
        """Leave an acknowledgement (or ``{"undo": true}``) for whichever replica holds the
        incident; it applies it at its next tick."""
        await self.redis.put_entries("acks", [(incident, {**request, "at": time.time()})])
        self.poke()

    async def shared_conditions(self) -> dict[str, dict[str, Any]]:
        """Every replica's open conditions, as the cluster holds them."""
        return await self.redis.entries("conditions")

    async def tick(self, *, renew_member: bool = True) -> None:
        """One round: renew, re-plan the leases, take over, give back, read the silences."""
        watcher = self.watcher
        assert watcher is not None
        sent_at = self.clock.now()
        try:
            if renew_member:
                members = await self.redis.renew_member(self._info())
                if isinstance(members, str):
                    # Our key expired (a pause) and a new replica of our name took it.
                    raise RedisUnavailable(f"the name {self.name!r} is held by {members}")
                self.membership, said = renewed(self.membership, sent_at, members)
                await self._say(said)
            await self._leases(watcher)
            if self.on_silences is not None:
                self.on_silences(await self.redis.entries("silences"))
            if self.on_acks is not None:
                await self._acks(self.on_acks)
        except RedisUnavailable as exc:
            error = SCRUBBER.text(str(exc))
            self.membership, said = renew_failed(self.membership, self.clock.now(), error)
            if said:
                log.warning(
                    "cluster degraded: Redis unreachable; watching what this replica held, "
                    "and every watch after the lease",
                    error=error,
                    lease=self.redis.lease,
                )
            await self._say(said)
        now_standing = self.standing()
        if now_standing is Standing.FAIL_OPEN_ALL and not self._was_open_all:
            watcher.wake(list(watcher.registry))
        self._was_open_all = now_standing is Standing.FAIL_OPEN_ALL
        if now_standing is not Standing.LAPSED:
            watcher.wake(list(self.held))  # those left dormant while it lapsed

    async def _leases(self, watcher: Watcher) -> None:
        live = [k for k, rt in watcher.registry.items() if not rt.removed]
        take, give = lease_plan(live, self.membership.members, self.name, self.held)
        ask = sorted({*self.held.keys() - set(give), *take})
        epochs = await self.redis.leases(ask)
        lost = [k for k in self.held if k not in epochs and k not in give]
        for key in lost:
            log.warning("lease lost to another replica; it stops here", watch=key)
            del self.held[key]
        gained = [k for k, e in epochs.items() if self.held.get(k) != e]
        if gained:
            await self._take_over(watcher, gained, epochs)
        if give:
            for key in give:  # stop acting first: the next holder may take it at once
                self.held.pop(key, None)
                if self.on_given is not None:
                    self.on_given(key)
            await self.redis.release(give)

    async def _take_over(self, watcher: Watcher, keys: list[str], epochs: dict[str, int]) -> None:
        stored = await self.redis.read(keys)
        rewrite: list[WatchWrite] = []
        owed: dict[str, dict[str, Any]] = {}
        recent = self.clock.wall().timestamp() - SENT_KEEP / 2  # the log still knows them
        for key in keys:
            self.held[key] = epochs[key]
            found, mine = stored.get(key), self.written_at.get(key)
            if found is not None and (mine is None or found.written_at > mine):
                if watcher.take_state(key, found.state, found.finished_at):
                    self.takeovers += watcher.started_at.timestamp() < found.written_at
                if found.written_at > recent:
                    owed.update((e.get("event_id", ""), e) for e in found.owed)
            elif (rt := watcher.registry.get(key)) is not None and rt.saved is not None:
                # After a fail-open this replica's copy is the freshest: it becomes the cluster's.
                rewrite.append(WatchWrite(key, rt.subject_id, rt.saved, rt.parent, rt.finished_at))
        if rewrite:
            await self.write(rewrite)
        if self.on_conditions is not None:
            taken = set(keys)
            shared = await self.redis.entries("conditions")
            theirs = {k: v for k, v in shared.items() if k.split("#", 1)[0] in taken}
            if theirs:
                self.on_conditions(theirs)
        if owed and self.on_owed is not None:
            await self.on_owed(list(owed.values()))
        watcher.wake(keys)

    async def leave(self) -> None:
        """Give back every lease and the member key (a clean stop), shielded and bounded,
        so the others take over at their next tick rather than after the lease."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.redis.timeout * 2):
            try:
                await self.redis.release(sorted(self.held))
                await self.redis.leave()
            except RedisUnavailable as exc:
                log.warning("could not leave the cluster cleanly", error=SCRUBBER.text(str(exc)))
            self.held.clear()
        await self.redis.close()

    async def _say(self, said: Sequence[Announce]) -> None:
        for what in said:
            if what is Announce.RECOVERED:
                log.info(
                    "cluster recovered: Redis answers again", members=len(self.membership.members)
                )
            if self.announce is not None and speaker(self.membership, self.name):
                await self.announce(what, self.membership)

    def _info(self) -> dict[str, Any]:
        return {
            "owned": len(self.held),
            "renewed_at": self.clock.wall().timestamp(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    # -- the outbox's state writes -------------------------------------------------------------

    async def write(
        self, writes: Sequence[WatchWrite], owed: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Write watch states under their leases, with what their change owes notifiers; a
        refused write means the lease moved on: this replica stops acting on it at once."""
        now = self.clock.wall().timestamp()
        batch: list[tuple[str, int, dict[str, Any] | None]] = []
        for w in writes:
            self.written_at[w.key] = now
            if w.state is None:
                self.written_at.pop(w.key, None)
            if (epoch := self.held.get(w.key)) is None:
                continue
            doc = None
            if w.state is not None:
                doc = {
                    "t": now,
                    "subject": w.subject,
                    "parent": w.parent,
                    "finished_at": w.finished_at,
                    "state": w.state,
                    "owed": list(owed),
                }
            batch.append((w.key, epoch, doc))
        if not batch:
            return
        try:
            refused = await self.redis.write(batch)
        except RedisUnavailable as exc:
            log.debug("state not written to Redis (kept here)", error=SCRUBBER.text(str(exc)))
            return
        for key in refused:
            self.refused_writes += 1
            log.warning("state write refused: the lease moved to another replica", watch=key)
            self.held.pop(key, None)

    async def write_conditions(self, items: Sequence[tuple[str, dict[str, Any] | None]]) -> None:
        """Share open conditions (keyed by watch), so a takeover keeps their reminders."""
        try:
            await self.redis.put_entries("conditions", items)
        except RedisUnavailable as exc:
            log.debug("conditions not written to Redis (kept here)", error=SCRUBBER.text(str(exc)))

    # -- the channels' notification log ---------------------------------------------------------

    async def claim(self, notifier: str, event_ids: Sequence[str]) -> tuple[set[str], set[str]]:
        """The ids another replica sent, and those it is sending (both empty: send; so it
        is when Redis cannot be reached: fail open)."""
        try:
            sent, busy = await self.redis.claim(notifier, event_ids, self.claim_ttl)
        except RedisUnavailable:
            self.claims["unavailable"] += 1
            return set(), set()
        outcome = (
            "peer" if sent >= set(event_ids) else "busy" if busy else "partial" if sent else "sent"
        )
        self.claims[outcome] += 1
        return sent, busy

    async def sent(self, notifier: str, event_ids: Sequence[str]) -> None:
        """Mark a send done in the notification log (best effort: the claim expires)."""
        with contextlib.suppress(RedisUnavailable):
            await self.redis.sent(notifier, event_ids, SENT_KEEP)

    # -- views ----------------------------------------------------------------------------------

    async def view(self) -> dict[str, Any]:
        """Members, what each owns and when it last renewed (``GET /cluster``)."""
        error: str | None = None
        try:
            members = await self.redis.member_info()
        except RedisUnavailable as exc:
            members, error = {}, SCRUBBER.text(str(exc))
        return {
            "name": self.name,
            "standing": self.standing().value,
            "redis": self.redis.where,
            "error": error or self.membership.error,
            "owned": len(self.held),
            "takeovers": self.takeovers,
            "members": [{"name": n, **members.get(n, {})} for n in self.membership.members],
        }
