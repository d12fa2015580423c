"""The cluster's Redis scripts on a real redis-server: membership, fenced leases, the
notification log; and what a wrong ``cluster:`` says at start (exit 2, no traceback)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis
from cli_harness import CLI, clean_env, simulator_and_receiver, write
from redis_server import RedisServer, running_redis

from watcher.clock import SystemClock
from watcher.daemon.cluster_redis import ClusterRedis, RedisUnavailable
from watcher.daemon.durability import Durability
from watcher.daemon.incident_refs import ClusterRefs
from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


def replica(url: str, name: str, instance: str, lease: float = 0.5) -> ClusterRedis:
    client = aioredis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    return ClusterRedis(
        client,
        prefix="t:",
        name=name,
        instance=instance,
        lease=lease,
        timeout=1.0,
        state_ttl=60.0,
        where=url,
    )


@pytest.fixture
async def pair(redis: RedisServer) -> AsyncIterator[tuple[ClusterRedis, ClusterRedis]]:
    a, b = replica(redis.url, "a", "a/1"), replica(redis.url, "b", "b/1")
    yield a, b
    await a.close()
    await b.close()


async def test_members_are_the_live_keys_and_a_name_is_one_replicas(
    pair: tuple[ClusterRedis, ClusterRedis], redis: RedisServer
) -> None:
    a, b = pair
    assert await a.hello()
    assert await a.renew_member({"owned": 0}) == ["a"]
    assert await b.renew_member({"owned": 0}) == ["a", "b"]
    impostor = replica(redis.url, "a", "a/2")
    assert await impostor.renew_member({}) == "a/1"  # the live replica's instance
    with anyio.fail_after(5):
        while await b.renew_member({}) != ["b"]:  # noqa: ASYNC110 - a stops renewing: it drops out
            await anyio.sleep(0.1)
    assert set(await b.member_info()) == {"b"}
    await impostor.close()


async def test_a_lease_fences_the_writes_of_a_holder_that_lost_it(
    pair: tuple[ClusterRedis, ClusterRedis],
) -> None:
    a, b = pair
    assert await a.leases(["w"]) == {"w": 1}
    assert await b.leases(["w"]) == {}  # held
    assert await a.leases(["w"]) == {"w": 1}  # renewed, same epoch
    assert await a.write([("w", 1, {"t": 1.0, "subject": "w", "state": {"n": 1}})]) == []
    with anyio.fail_after(5):
        while not (got := await b.leases(["w"])):  # noqa: ASYNC110 - a paused: its lease runs out
            await anyio.sleep(0.1)
    assert got == {"w": 2}
    # a wakes up and writes with the epoch it had: refused, b's state stays.
    assert await a.write([("w", 1, {"t": 2.0, "subject": "w", "state": {"n": 99}})]) == ["w"]
    assert await b.write([("w", 2, {"t": 3.0, "subject": "w", "state": {"n": 2}})]) == []
    assert (await b.read(["w"]))["w"].state == {"n": 2}
    await a.release(["w"])  # not a's to release
    assert await b.leases(["w"]) == {"w": 2}
    await b.release(["w"])
    assert await a.leases(["w"]) == {"w": 3}


async def test_the_notification_log_gives_each_send_to_one_replica(
    pair: tuple[ClusterRedis, ClusterRedis],
) -> None:
    a, b = pair
    assert await a.claim("audit", ["e1", "e2"], ttl=5) == (set(), set())
    assert await a.claim("audit", ["e1"], ttl=5) == (set(), set())  # a's own, again (a retry)
    # b meets a's claims in flight (retry later) and sends only e3.
    assert await b.claim("audit", ["e1", "e2", "e3"], ttl=5) == (set(), {"e1", "e2"})
    await a.sent("audit", ["e1", "e2"], keep=60)
    assert await b.claim("audit", ["e1"], ttl=5) == ({"e1"}, set())  # sent: b drops its copy
    assert await b.claim("pager", ["e1"], ttl=5) == (set(), set())  # per notifier


async def test_incident_refs_are_every_replicas_and_kept_locally_without_redis(
    pair: tuple[ClusterRedis, ClusterRedis], redis: RedisServer
) -> None:
    a, b = pair
    clock = SystemClock()
    mine, theirs = (ClusterRefs(Durability(None, clock), r) for r in (a, b))
    ref = {"channel": "C0SIMINC01", "ts": "1765000000.000001", "replied": []}
    await mine.put("slack", "inc_1", ref)
    # Another replica, taking the watch over, edits the same message.
    assert await theirs.get("slack", "inc_1") == ref
    redis.stop()
    await mine.put("slack", "inc_2", {"ts": "2"})  # Redis away: kept here
    assert await mine.get("slack", "inc_2") == {"ts": "2"}
    assert await theirs.get("slack", "inc_2") is None


async def test_a_server_that_is_not_a_redis_is_said_so(tmp_path: Path) -> None:
    world = World()
    async with simulator_and_receiver(world) as (sim, _):
        fake = replica(f"redis://127.0.0.1:{sim.port}/0", "a", "a/1")
        with pytest.raises(RedisUnavailable) as caught:
            await fake.hello()
        await fake.close()
    assert str(sim.port) in str(caught.value)


def _run(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "run", "--config", str(config)],
        env=clean_env(TRIGGER_SECRET_KEY="tr_dev_x", WATCHER_HTTP_LISTEN="127.0.0.1:0", **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_wrong_cluster_settings_exit_2_with_the_reason(tmp_path: Path) -> None:
    watches = [{"type": "trigger_run", "id": "run_1"}]
    notifiers = [{"url": "json://127.0.0.1:9/hook", "tags": ["all"]}]
    base = {"watches": watches, "notifiers": notifiers}
    secret = "s3cr3t-redis-password"
    unreachable = write(
        tmp_path,
        {**base, "cluster": {"redis_url": f"redis://:{secret}@127.0.0.1:9/0", "timeout": "1s"}},
    )
    done = _run(unreachable)
    assert done.returncode == 2, done.stderr
    assert "cluster.redis_url" in done.stderr
    assert "127.0.0.1:9" in done.stderr
    assert secret not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    both = write(
        tmp_path,
        {**base, "shard": {"count": 2, "index": 0}, "cluster": {"redis_url": "redis://x/0"}},
    )
    done = _run(both)
    assert done.returncode == 2
    assert "shard and cluster together" in done.stderr
    scheme = write(tmp_path, {**base, "cluster": {"redis_url": "http://127.0.0.1:6379"}})
    done = _run(scheme)
    assert done.returncode == 2
    assert "cluster.redis_url" in done.stderr
    assert "redis://" in done.stderr
    missing = write(
        tmp_path,
        {**base, "cluster": {"redis_url": "redis://127.0.0.1:9/0", "password_env": "NOPE_PW"}},
    )
    done = _run(missing)
    assert done.returncode == 2
    assert "NOPE_PW is not set" in done.stderr


def test_a_refused_password_exits_2(tmp_path: Path, redis: RedisServer) -> None:
    redis_cli = subprocess.run(
        ["redis-cli", "-p", str(redis.port), "CONFIG", "SET", "requirepass", "right-one"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert redis_cli.returncode == 0, redis_cli.stderr
    (tmp_path / "pw").write_text("wrong-one\n")
    config = write(
        tmp_path,
        {
            "watches": [{"type": "trigger_run", "id": "run_1"}],
            "notifiers": [{"url": "json://127.0.0.1:9/hook", "tags": ["all"]}],
            "cluster": {"redis_url": redis.url, "password_file": str(tmp_path / "pw")},
        },
    )
    done = _run(config)
    assert done.returncode == 2, done.stderr
    assert "refused the password" in done.stderr or "WRONGPASS" in done.stderr
    assert "wrong-one" not in done.stderr


async def test_once_with_a_cluster_config_polls_every_watch(
    tmp_path: Path, redis: RedisServer
) -> None:
    """``once`` is a look, not a replica: it joins nothing and owns everything."""
    world = World()
    world.add_trigger_run("run_once", "job", "EXECUTING")
    async with simulator_and_receiver(world) as (sim, _):
        config = write(
            tmp_path,
            {
                "watches": [{"type": "trigger_run", "id": "run_once"}],
                "notifiers": [{"url": "json://127.0.0.1:9/hook", "tags": ["all"]}],
                "cluster": {"redis_url": redis.url},
            },
        )
        done = await anyio.run_process(
            [*CLI, "once", "--config", str(config)],
            env=clean_env(TRIGGER_API_URL=sim.url, TRIGGER_SECRET_KEY=world.trigger_key),
            check=False,
        )
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert "run_once" in out
    assert "EXECUTING" in out
