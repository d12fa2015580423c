"""The cluster's pure core: standing, lease plans, the speaker; and a seeded random run of
the lease protocol (joins, deaths, pauses) against a model of the Redis scripts."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import pytest

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

LEASE = 15.0


def test_standing_lapses_before_the_lease_can_expire() -> None:
    m, said = renewed(Membership(LEASE), 100.0, ["a", "b"])
    assert said == []
    assert standing(m, 100.0 + LEASE / 3) is Standing.MEMBER
    # A replica that was paused stops acting at two thirds: its key lives until 100 + LEASE.
    assert standing(m, 100.0 + LEASE * 2 / 3) is Standing.LAPSED
    assert standing(m, 100.0 + LEASE) is Standing.LAPSED


def test_redis_down_fails_open_held_then_everything_and_is_said_once() -> None:
    m, _ = renewed(Membership(LEASE), 0.0, ["a"])
    m, said = renew_failed(m, 5.0, "connection refused")
    assert said == [Announce.DEGRADED]
    m, said = renew_failed(m, 10.0, "connection refused")
    assert said == []
    held = {"w1": 3}
    assert standing(m, 10.0) is Standing.FAIL_OPEN_HELD
    assert acts_on("w1", standing(m, 10.0), held)
    assert not acts_on("w2", standing(m, 10.0), held)
    assert standing(m, 5.0 + LEASE) is Standing.FAIL_OPEN_ALL
    assert acts_on("w2", standing(m, 5.0 + LEASE), held)
    m, said = renewed(m, 30.0, ["a"])
    assert said == [Announce.RECOVERED]
    assert standing(m, 30.0) is Standing.MEMBER


def test_lease_plan_moves_about_one_nth_when_a_member_joins() -> None:
    keys = [f"trigger_run:run_{i}" for i in range(3000)]
    two = {m: lease_plan(keys, ["a", "b"], m, {})[0] for m in ("a", "b")}
    assert sorted(two["a"] + two["b"]) == sorted(keys)  # each key exactly once
    held = {m: dict.fromkeys(two[m], 1) for m in ("a", "b")}
    moved = 0
    for m in ("a", "b"):
        take, give = lease_plan(keys, ["a", "b", "c"], m, held[m])
        assert take == []
        moved += len(give)
    assert abs(moved - len(keys) / 3) < len(keys) * 0.05
    assert len(lease_plan(keys, ["a", "b", "c"], "c", {})[0]) == moved


def test_exactly_one_speaker_among_agreeing_members() -> None:
    members = ["r0", "r1", "r2"]
    views = {n: renewed(Membership(LEASE), 0.0, members)[0] for n in members}
    assert sum(speaker(views[n], n) for n in members) == 1


# -- the protocol, seeded random -------------------------------------------------------------


@dataclass
class Store:
    """The Redis scripts' semantics (daemon/cluster_redis.py), as a model: member keys and
    leases with expiry, epochs that only grow."""

    members: dict[str, tuple[str, float]] = field(default_factory=dict)
    leases: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    epochs: Counter[str] = field(default_factory=Counter)

    def renew_member(self, name: str, instance: str, now: float) -> list[str] | None:
        held = self.members.get(name)
        if held is not None and held[1] > now and held[0] != instance:
            return None
        self.members[name] = (instance, now + LEASE)
        return sorted(n for n, (_, exp) in self.members.items() if exp > now)

    def lease(self, keys: list[str], instance: str, now: float) -> dict[str, int]:
        out = {}
        for key in keys:
            cur = self.leases.get(key)
            if cur is None or cur[2] <= now:
                self.epochs[key] += 1
                self.leases[key] = (instance, self.epochs[key], now + LEASE)
                out[key] = self.epochs[key]
            elif cur[0] == instance:
                self.leases[key] = (instance, cur[1], now + LEASE)
                out[key] = cur[1]
        return out

    def release(self, keys: list[str], instance: str, now: float) -> None:
        for key in keys:
            cur = self.leases.get(key)
            if cur is not None and cur[0] == instance and cur[2] > now:
                del self.leases[key]

    def write_ok(self, key: str, instance: str, epoch: int, now: float) -> bool:
        cur = self.leases.get(key)
        return cur is not None and cur[2] > now and cur[:2] == (instance, epoch)


@dataclass
class Replica:
    name: str
    instance: str
    m: Membership = field(default_factory=lambda: Membership(LEASE))
    held: dict[str, int] = field(default_factory=dict)
    next_tick: float = 0.0
    paused_until: float = 0.0
    alive: bool = True

    def tick(self, store: Store, keys: list[str], now: float, sent_at: float) -> None:
        members = store.renew_member(self.name, self.instance, sent_at)
        if members is None:
            return
        self.m, _ = renewed(self.m, sent_at, members)
        take, give = lease_plan(keys, self.m.members, self.name, self.held)
        for key in give:
            self.held.pop(key, None)
        epochs = store.lease(sorted({*self.held, *take}), self.instance, now)
        self.held = dict(epochs)
        store.release(give, self.instance, now)


@pytest.mark.parametrize("seed", range(12))
def test_one_writer_per_epoch_and_no_watch_unowned_for_long(seed: int) -> None:
    rng = random.Random(seed)
    keys = [f"w{i}" for i in range(40)]
    store = Store()
    replicas: list[Replica] = []
    serial = 0

    def spawn(name: str) -> None:
        nonlocal serial
        serial += 1
        replicas.append(Replica(name, f"{name}/{serial}", next_tick=now))

    now, dt = 0.0, 0.25
    quiet_until = 0.0
    chaos: Counter[str] = Counter()
    for name in ("r0", "r1", "r2"):
        spawn(name)
    writers: dict[tuple[str, int], set[str]] = {}
    unowned_since: dict[str, float] = {}
    worst_gap = 0.0
    while now < 600.0:
        # Chaos: a death, a pause, a (re)join, each now and then.
        # One failure at a time: the bound is per failure (each one's takeover is done
        # before the next begins); a pause ends, too, with a rejoin and its handover.
        roll = rng.random() if now >= quiet_until else 1.0
        live = [r for r in replicas if r.alive]
        if roll < 0.02 and len(live) > 1:
            rng.choice(live).alive = False
            quiet_until = now + 2 * LEASE
            chaos["death"] += 1
        elif roll < 0.04 and live:
            pause = rng.uniform(1, 3 * LEASE)
            rng.choice(live).paused_until = now + pause
            quiet_until = now + pause + 2 * LEASE
            chaos["pause"] += 1
        elif roll < 0.06 and len(live) < 4:
            names = {r.name for r in live}
            spawn(next(f"r{i}" for i in range(10) if f"r{i}" not in names))
            quiet_until = now + 2 * LEASE
            chaos["join"] += 1
        for r in replicas:
            if not r.alive or now < r.paused_until:
                continue
            if now >= r.next_tick:
                # A renewal can be slow: it counts from when it was sent.
                r.tick(store, keys, now, sent_at=now - rng.uniform(0, 0.2))
                r.next_tick = now + LEASE / 3
        acting: dict[str, list[Replica]] = {}
        for r in replicas:
            if not r.alive or now < r.paused_until:
                continue
            for key in keys:
                if acts_on(key, standing(r.m, now), r.held):
                    acting.setdefault(key, []).append(r)
                    if store.write_ok(key, r.instance, r.held[key], now):
                        writers.setdefault((key, r.held[key]), set()).add(r.instance)
        for key in keys:
            assert len(acting.get(key, [])) <= 1, (seed, now, key, acting[key])
            if acting.get(key):
                if key in unowned_since:
                    worst_gap = max(worst_gap, now - unowned_since.pop(key))
            elif any(r.alive and now >= r.paused_until for r in replicas):
                unowned_since.setdefault(key, now)
        now += dt
    assert sum(chaos.values()) >= 5, chaos  # the run did go through failures
    assert all(len(w) == 1 for w in writers.values())
    # A dead or paused holder's key lives out its lease; the next tick takes it over.
    assert worst_gap <= LEASE + LEASE / 3 + 1.0, worst_gap
