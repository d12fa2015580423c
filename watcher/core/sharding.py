"""Which shard owns a watch: rendezvous (highest random weight) hashing.

Each (shard, key) pair gets a pseudo-random score; the key belongs to the shard
with the highest one. Every key lands on exactly one shard, every shard computes
the same answer without talking to the others, and going from ``n`` to ``n + 1``
shards moves only the keys the new shard wins, about ``1 / (n + 1)`` of them
(``hashmod`` would move most). BLAKE2b rather than ``hash()``: Python salts
``hash()`` per process, and the shards must agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Protocol

__all__ = ["Ownership", "Shard", "ordinal_of", "parse_shard", "rendezvous", "shard_of"]

_ORDINAL = re.compile(r"-(\d+)$")


def _score(shard: int | str, key: str) -> int:
    digest = blake2b(f"{shard}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous(key: str, candidates: Iterable[str]) -> str | None:
    """The candidate (a cluster member's name) that owns ``key``; None when there is none."""
    return max(candidates, key=lambda name: _score(name, key), default=None)


def shard_of(key: str, count: int) -> int:
    """The shard (``0 <= shard < count``) that owns ``key``."""
    if count < 1:
        raise ValueError("shard count must be at least 1")
    if count == 1:
        return 0
    return max(range(count), key=lambda shard: _score(shard, key))


class Ownership(Protocol):
    """Which watches this process acts on: a static :class:`Shard`, or a cluster's live
    leases (:mod:`watcher.daemon.cluster`)."""

    def owns(self, key: str) -> bool:
        """Whether this process polls watch ``key`` and publishes what it finds, now."""
        ...

    def adopts(self, key: str) -> bool:
        """Whether this process keeps ``key`` (a configured watch's key, a discovered run's
        id) in its registry: a cluster keeps every one, so that any member can take it over."""
        ...

    def follows(self, key: str, run_id: str) -> bool:
        """Whether this process polls the discovered run ``run_id`` (watch ``key``) now."""
        ...


@dataclass(frozen=True, slots=True)
class Shard:
    """This process's part of the work: shard ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= index < count")

    def owns(self, key: str) -> bool:
        """Whether ``key`` is this shard's."""
        return self.count == 1 or shard_of(key, self.count) == self.index

    def adopts(self, key: str) -> bool:
        """A shard keeps only what it owns."""
        return self.owns(key)

    def follows(self, key: str, run_id: str) -> bool:
        """A discovered run goes by its id, as :meth:`adopts` placed it."""
        return self.owns(run_id)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"i/n"`` (as in ``WATCHER_SHARD``) as a :class:`Shard`; ``ValueError`` names the problem."""
    index, sep, count = text.strip().partition("/")
    if not sep or not index.isdigit() or not count.isdigit():
        raise ValueError(f"{text!r} is not INDEX/COUNT, e.g. 0/3")
    return Shard(int(index), int(count))


def ordinal_of(hostname: str) -> int | None:
    """The ordinal of a StatefulSet pod name (``run-watcher-2`` -> 2), if it has one."""
    match = _ORDINAL.search(hostname.split(".", 1)[0])
    return int(match.group(1)) if match else None
