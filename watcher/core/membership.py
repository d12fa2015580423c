"""A replica's standing in the cluster, and which watches it may act on: pure.

Every input (a renewal that got through, one that failed) and every transition is
here, as data; :mod:`watcher.daemon.cluster` performs the Redis calls and feeds
the outcomes in. Times are the replica's monotonic clock, passed in.

The safety rule: a watch is acted on (polled, its state written, its events
published) only by the replica that holds its lease. A lease lives ``lease``
seconds on Redis from the renewal that set it, and the renewal was *sent* before
Redis set it, so a replica counts from the moment it sent its last successful
renewal and stops acting at two thirds of the lease (``LAPSED``): a replica that
was paused or partitioned knows it may have lost its watches before their leases
can expire, and acts on nothing until a renewal tells it what it still holds.

Fail open: when Redis cannot be reached (a renewal failed, not merely late), the
replica keeps watching what it held and, ``lease`` later, every watch: duplicates
are possible, losses are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum

from watcher.core.sharding import rendezvous

__all__ = [
    "SPEAKER_KEY",
    "Announce",
    "Membership",
    "Phase",
    "Standing",
    "acts_on",
    "lease_plan",
    "renew_failed",
    "renewed",
    "speaker",
    "standing",
]

SPEAKER_KEY = "cluster"
"""The key whose owner speaks for the cluster (``cluster.degraded``, ``cluster.recovered``)."""


class Phase(Enum):
    """Whether Redis answers."""

    MEMBER = "member"
    DEGRADED = "degraded"


class Standing(Enum):
    """What a replica may act on now."""

    MEMBER = "member"
    """Its held leases."""
    LAPSED = "lapsed"
    """Nothing: its last renewal is too old to trust (a pause, a stall)."""
    FAIL_OPEN_HELD = "fail-open-held"
    """Redis unreachable: what it held when Redis went away."""
    FAIL_OPEN_ALL = "fail-open-all"
    """Redis unreachable for ``lease``: every watch (its holders may be gone too)."""


class Announce(Enum):
    """What a transition asks the edge to say, once."""

    DEGRADED = "cluster.degraded"
    RECOVERED = "cluster.recovered"


@dataclass(frozen=True, slots=True)
class Membership:
    """A replica's view of the cluster."""

    lease: float
    phase: Phase = Phase.MEMBER
    renewed_at: float | None = None
    """When the last renewal that got through was sent."""
    members: tuple[str, ...] = ()
    """The live members, as the last renewal listed them (sorted)."""
    degraded_since: float | None = None
    error: str | None = None
    """Why the last renewal failed (no secrets: the edge scrubs it)."""


def renewed(
    m: Membership, sent_at: float, members: Iterable[str]
) -> tuple[Membership, list[Announce]]:
    """A renewal sent at ``sent_at`` got through and listed ``members``."""
    announce = [Announce.RECOVERED] if m.phase is Phase.DEGRADED else []
    return (
        replace(
            m,
            phase=Phase.MEMBER,
            renewed_at=sent_at,
            members=tuple(sorted(set(members))),
            degraded_since=None,
            error=None,
        ),
        announce,
    )


def renew_failed(m: Membership, now: float, error: str) -> tuple[Membership, list[Announce]]:
    """A renewal could not reach Redis (refused, timed out, an error reply)."""
    if m.phase is Phase.DEGRADED:
        return replace(m, error=error), []
    return replace(m, phase=Phase.DEGRADED, degraded_since=now, error=error), [Announce.DEGRADED]


def standing(m: Membership, now: float) -> Standing:
    """What ``m`` may act on at ``now``."""
    if m.phase is Phase.DEGRADED:
        assert m.degraded_since is not None
        if now - m.degraded_since >= m.lease:
            return Standing.FAIL_OPEN_ALL
        return Standing.FAIL_OPEN_HELD
    if m.renewed_at is None or now - m.renewed_at >= m.lease * 2 / 3:
        return Standing.LAPSED
    return Standing.MEMBER


def acts_on(key: str, now_standing: Standing, held: Mapping[str, int]) -> bool:
    """Whether a replica standing as ``now_standing`` and holding ``held`` acts on ``key``."""
    match now_standing:
        case Standing.MEMBER | Standing.FAIL_OPEN_HELD:
            return key in held
        case Standing.LAPSED:
            return False
        case Standing.FAIL_OPEN_ALL:
            return True


def lease_plan(
    keys: Iterable[str], members: Sequence[str], me: str, held: Mapping[str, int]
) -> tuple[list[str], list[str]]:
    """The leases to take (``keys`` this member wins, not held yet) and to give back (held,
    but won by another member or no longer watched)."""
    wanted = {key for key in keys if rendezvous(key, members) == me}
    take = sorted(wanted - held.keys())
    give = sorted(key for key in held if key not in wanted)
    return take, give


def speaker(m: Membership, me: str) -> bool:
    """Whether ``me`` speaks for the cluster (one copy of its own announcements)."""
    members = m.members or (me,)
    return rendezvous(SPEAKER_KEY, members if me in members else (*members, me)) == me
