"""Three replicas on a real redis-server against the simulator: one copy to humans, a
SIGKILLed replica's watches taken over with their state, Redis down and back, a paused
replica that wakes up and acts on nothing stale."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from anyio.abc import Process, TaskGroup
from cli_harness import CLI, clean_env, free_port, simulator_and_receiver
from redis_server import RedisServer, running_redis

from watcher.core.sharding import rendezvous
from watcher.simulator.receiver import WebhookReceiver
from watcher.simulator.world import World

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

LEASE = 3.0
DEGRADED = (
    "cluster degraded: Redis unreachable; watching what this replica held, "
    "and every watch after the lease"
)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_redis(tmp_path)


@dataclass
class Replica:
    """One ``run-watcher run`` process of the cluster."""

    name: str
    port: int
    proc: Process
    log: list[str] = field(default_factory=list)

    def lines(self, event: str) -> list[dict[str, Any]]:
        """Its JSON log lines whose event is ``event``."""
        out = []
        for line in self.log:
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("event") == event:
                out.append(doc)
        return out

    async def cluster(self) -> dict[str, Any]:
        """Its ``GET /cluster``."""
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.get(f"http://127.0.0.1:{self.port}/cluster")
        doc: dict[str, Any] = answer.json()
        return doc


class Stage:
    """The simulator, the receiver, Redis and the replicas of one test."""

    def __init__(
        self, tmp_path: Path, world: World, receiver: WebhookReceiver, sim_url: str, tg: TaskGroup
    ) -> None:
        self.tmp_path = tmp_path
        self.world = world
        self.receiver = receiver
        self.sim_url = sim_url
        self.tg = tg
        self.replicas: dict[str, Replica] = {}

    def config(
        self, redis_url: str, runs: list[str], *, realtime: bool = False, **notifications: str
    ) -> Path:
        path = self.tmp_path / "watcher.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "polling": {"min_interval": "300ms", "max_interval": "1s"},
                    "sources": {"trigger": {"realtime": realtime}},
                    "notifications": {
                        "group_wait": "0s",
                        "group_interval": "200ms",
                        **notifications,
                    },
                    "watches": [{"type": "trigger_run", "id": r} for r in runs],
                    "notifiers": [
                        {
                            "url": self.receiver.apprise_url("json"),
                            "tags": ["all"],
                            "format": "json",
                            "name": "audit",
                        }
                    ],
                    "delivery": {
                        "initial_backoff": "100ms",
                        "max_backoff": "500ms",
                        "timeout": "2s",
                        "connect_timeout": "1s",
                    },
                    "cluster": {"redis_url": redis_url, "lease": f"{LEASE}s", "timeout": "1s"},
                }
            )
        )
        return path

    async def start(self, name: str, config: Path) -> Replica:
        port = free_port()
        env = clean_env(
            TRIGGER_API_URL=self.sim_url,
            TRIGGER_SECRET_KEY=self.world.trigger_key,
            POD_NAME=name,
            WATCHER_HTTP_LISTEN=f"127.0.0.1:{port}",
        )
        proc = await anyio.open_process(
            [*CLI, "run", "--config", str(config), "--log-format", "json"],
            env=env,
            stderr=subprocess.PIPE,
        )
        replica = Replica(name, port, proc)
        self.replicas[name] = replica
        ready = anyio.Event()

        async def read() -> None:
            assert proc.stderr is not None
            buffer = b""
            async for chunk in proc.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    replica.log.append(text)
                    if "every watch polled once" in text:
                        ready.set()

        self.tg.start_soon(read)
        with anyio.fail_after(30):
            await ready.wait()
        return replica

    async def until(self, predicate: Callable[[], bool], within: float = 30.0) -> None:
        """Wait for a condition of the replicas (their logs, their endpoints)."""
        with anyio.fail_after(within):
            while not predicate():  # noqa: ASYNC110 - observing other processes
                await anyio.sleep(0.05)

    async def settled_ownership(self, names: list[str], watches: int) -> None:
        """Every watch owned by exactly one of ``names``, each owning some."""
        with anyio.fail_after(30):
            while True:
                views = [await self.replicas[n].cluster() for n in names]
                owned = [v["owned"] for v in views]
                if (
                    sum(owned) == watches
                    and all(owned)
                    and all(v["standing"] == "member" for v in views)
                ):
                    return
                await anyio.sleep(0.1)

    async def sole_owner(self, names: list[str]) -> str:
        """With one watch: the replica holding it once the leases settle (the first to
        start holds it until a later one joins and wins it)."""
        with anyio.fail_after(30):
            while True:
                views = {n: await self.replicas[n].cluster() for n in names}
                owners = [n for n, v in views.items() if v["owned"] == 1]
                if len(owners) == 1 and all(v["standing"] == "member" for v in views.values()):
                    return owners[0]
                await anyio.sleep(0.1)

    def delivered(self, pairs: set[tuple[str, str]]) -> Callable[[list[Any]], bool]:
        return lambda rs: {(e["subject_id"], e["to_status"]) for r in rs for e in r.events} >= pairs

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter(
            (e["subject_id"], e["to_status"])
            for e in self.receiver.events()
            if not e["kind"].startswith("cluster.")
        )

    async def stop_all(self) -> None:
        for replica in self.replicas.values():
            if replica.proc.returncode is None:
                replica.proc.send_signal(signal.SIGCONT)
                replica.proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            for replica in self.replicas.values():
                await replica.proc.wait()


@asynccontextmanager
async def stage(tmp_path: Path, world: World) -> AsyncIterator[Stage]:
    async with simulator_and_receiver(world) as (sim, receiver), anyio.create_task_group() as tg:
        st = Stage(tmp_path, world, receiver, sim.url, tg)
        try:
            yield st
        finally:
            await st.stop_all()
            tg.cancel_scope.cancel()


async def test_three_replicas_one_copy_takeover_redis_outage_and_rejoin(
    tmp_path: Path, redis: RedisServer
) -> None:
    world = World()
    runs = [f"run_c{i:02d}" for i in range(30)]
    for run_id in runs:
        world.add_trigger_run(run_id, "job", "QUEUED")
    async with stage(tmp_path, world) as st:
        config = st.config(redis.url, runs)
        for name in ("r0", "r1", "r2"):
            await st.start(name, config)
        await st.settled_ownership(["r0", "r1", "r2"], len(runs))
        polls_before = world.requests.get("trigger.run", 0)

        # Steady: each transition once, from whichever replica owns the run.
        steady = {(r, "EXECUTING") for r in runs[:10]}
        for run_id in runs[:10]:
            world.set_trigger_run(run_id, "EXECUTING")
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered(steady))
        # One replica's worth of polls: 30 watches at most every 300 ms, for the time taken.
        assert world.requests.get("trigger.run", 0) - polls_before < 30 * 40

        # SIGKILL one replica mid-storm: its runs are taken over with their state.
        victim = st.replicas["r0"]
        for run_id in runs[10:20]:
            world.set_trigger_run(run_id, "EXECUTING")
        victim.proc.kill()
        await victim.proc.wait()
        killed_at = anyio.current_time()
        storm = {(r, "EXECUTING") for r in runs[10:20]}
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered(storm))
        await st.settled_ownership(["r1", "r2"], len(runs))
        assert anyio.current_time() - killed_at < LEASE + LEASE / 3 + 5
        # What r0 announced before it died is not announced again by its successors.
        assert all(n == 1 for key, n in st.counts().items() if key in steady), st.counts()
        assert all(n <= 2 for key, n in st.counts().items() if key in storm), st.counts()

        # Redis down for a while (past the lease: every replica watches everything).
        redis.stop()
        down = {(r, "FAILED") for r in runs[:5]}
        survivors = (st.replicas["r1"], st.replicas["r2"])
        await st.until(lambda: all(r.lines(DEGRADED) for r in survivors))
        for run_id in runs[:5]:
            world.set_trigger_run(run_id, "FAILED", "while Redis was down")
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered(down))
        redis.start()
        await st.settled_ownership(["r1", "r2"], len(runs))
        with anyio.fail_after(30):
            await st.receiver.wait_until(
                lambda rs: any(e["kind"] == "cluster.recovered" for r in rs for e in r.events)
            )

        # Back: exactly once again.
        after = {(r, "COMPLETED") for r in runs[20:25]}
        for run_id in runs[20:25]:
            world.set_trigger_run(run_id, "EXECUTING")
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered({(r, "EXECUTING") for r in runs[20:25]}))
        for run_id in runs[20:25]:
            world.set_trigger_run(run_id, "COMPLETED")
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered(after))

        # The killed replica rejoins: it takes its share back, with the shared state.
        await st.start("r0", config)
        await st.settled_ownership(["r0", "r1", "r2"], len(runs))
        rejoin = {(r, "EXECUTING") for r in runs[25:]}
        for run_id in runs[25:]:
            world.set_trigger_run(run_id, "EXECUTING")
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered(rejoin))
        # A last round over every replica, then a clean stop.
        for replica in st.replicas.values():
            if replica.proc.returncode is None:
                replica.proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            for replica in st.replicas.values():
                await replica.proc.wait()
        counts = st.counts()
        kinds = Counter(e["kind"] for e in st.receiver.events())

    assert all(n == 1 for key, n in counts.items() if key in after | rejoin), counts
    assert all(n <= 3 for n in counts.values()), counts
    assert kinds["cluster.degraded"] == 1, kinds
    assert kinds["cluster.recovered"] == 1, kinds
    everything = steady | storm | down | after | rejoin
    assert set(counts) >= everything
    # Duplicates come only from the Redis outage (both survivors watched everything).
    assert sum(n - 1 for key, n in counts.items() if key not in down) <= len(storm)


async def test_a_takeover_of_runs_the_feed_holds_reads_their_rows_not_the_api(
    tmp_path: Path, redis: RedisServer
) -> None:
    # Two replicas on the realtime feed: each feed holds every run. When one is killed,
    # its successor judges the runs it takes over against their rows: the still ones cost
    # nothing; the one that failed while nobody owned it is read once, announced once.
    world = World()
    runs = [f"run_f{i:02d}" for i in range(24)]
    for run_id in runs:
        world.add_trigger_run(run_id, "job", "EXECUTING")
    theirs = [r for r in runs if rendezvous(f"trigger_run:{r}", ["r0", "r1"]) == "r0"]
    async with stage(tmp_path, world) as st:
        config = st.config(redis.url, runs, realtime=True)
        for name in ("r0", "r1"):
            await st.start(name, config)
        await st.settled_ownership(["r0", "r1"], len(runs))
        reads = world.requests.get("trigger.run", 0)
        victim = st.replicas["r0"]
        victim.proc.kill()
        await victim.proc.wait()
        world.set_trigger_run(theirs[0], "FAILED", "while its replica was dead")
        await st.settled_ownership(["r1"], len(runs))
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered({(theirs[0], "FAILED")}))
        world.set_trigger_run(theirs[1], "COMPLETED")  # after: from its row alone
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered({(theirs[1], "COMPLETED")}))
        taken_reads = world.requests.get("trigger.run", 0) - reads
        failed = [e for e in st.receiver.events() if e["to_status"] == "FAILED"]

    assert len(theirs) >= 3, theirs  # the hash gave the victim a share
    assert taken_reads == 1, taken_reads  # the run that moved; none per run taken over
    assert [e["subject_id"] for e in failed] == [theirs[0]]
    assert failed[0]["details"]["error"] == "while its replica was dead"
    assert st.counts()[(theirs[1], "COMPLETED")] == 1


async def test_a_paused_replica_wakes_up_and_sends_nothing_stale(
    tmp_path: Path, redis: RedisServer
) -> None:
    world = World()
    runs = [f"run_p{i:02d}" for i in range(8)]
    for run_id in runs:
        world.add_trigger_run(run_id, "job", "QUEUED")
    async with stage(tmp_path, world) as st:
        config = st.config(redis.url, runs)
        for name in ("r0", "r1"):
            await st.start(name, config)
        await st.settled_ownership(["r0", "r1"], len(runs))
        paused = st.replicas["r0"]
        paused.proc.send_signal(signal.SIGSTOP)  # longer than the lease
        moved = {(r, "EXECUTING") for r in runs}
        for run_id in runs:
            world.set_trigger_run(run_id, "EXECUTING")
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered(moved))
        await st.until(lambda: st.replicas["r1"].lines("joined the cluster") != [])
        with anyio.fail_after(30):
            while (await st.replicas["r1"].cluster())["owned"] < len(runs):  # noqa: ASYNC110 - another process
                await anyio.sleep(0.1)
        paused.proc.send_signal(signal.SIGCONT)
        # It wakes up lapsed, learns its leases are gone, and takes its share back
        # with the state r1 wrote.
        await st.until(lambda: paused.lines("lease lost to another replica; it stops here") != [])
        await st.settled_ownership(["r0", "r1"], len(runs))
        done = {(r, "COMPLETED") for r in runs}
        for run_id in runs:
            world.set_trigger_run(run_id, "COMPLETED")
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered(done))
        await st.stop_all()
        counts = st.counts()
    assert {k: n for k, n in counts.items() if n != 1} == {}
    assert set(counts) == moved | done


async def test_a_taken_over_condition_keeps_its_reminders(
    tmp_path: Path, redis: RedisServer
) -> None:
    """A watch that cannot see (404) is an open condition: its reminders go on from the
    replica that takes it over, without a second ``watch.error``."""
    world = World()
    async with stage(tmp_path, world) as st:
        config = st.config(redis.url, ["run_missing"], repeat_interval="1s")
        for name in ("r0", "r1"):
            await st.start(name, config)

        def kinds(kind: str) -> int:
            return sum(1 for e in st.receiver.events() if e["kind"] == kind)

        with anyio.fail_after(30):
            await st.receiver.wait_until(lambda _: kinds("condition.reminder") >= 1)
        owner = await st.sole_owner(["r0", "r1"])
        st.replicas[owner].proc.kill()
        await st.replicas[owner].proc.wait()
        survivor = st.replicas["r1" if owner == "r0" else "r0"]
        with anyio.fail_after(30):
            while (await survivor.cluster())["owned"] != 1:  # noqa: ASYNC110 - another process
                await anyio.sleep(0.1)
        before = kinds("condition.reminder")
        with anyio.fail_after(30):
            await st.receiver.wait_until(lambda _: kinds("condition.reminder") >= before + 2)
        errors = kinds("watch.error")
    assert errors == 1


async def test_what_a_killed_replica_owed_is_sent_by_its_successor(
    tmp_path: Path, redis: RedisServer
) -> None:
    """The owner saw the change and wrote its state, but died before the notifier took
    the message: the successor resumes from that state (nothing to detect again) and
    sends what was owed."""
    world = World()
    world.add_trigger_run("run_owed", "job", "EXECUTING")
    async with stage(tmp_path, world) as st:
        config = st.config(redis.url, ["run_owed"])
        for name in ("r0", "r1"):
            await st.start(name, config)
        owner = st.replicas[await st.sole_owner(["r0", "r1"])]
        st.receiver.fail_first = 10**9  # the notifier refuses: the message stays owed
        world.set_trigger_run("run_owed", "FAILED", "owed")
        with anyio.fail_after(30):
            await st.receiver.wait_rejected(1)
        owner.proc.kill()
        await owner.proc.wait()
        st.receiver.fail_first = 0
        with anyio.fail_after(30):
            await st.receiver.wait_until(st.delivered({("run_owed", "FAILED")}))
        counts = st.counts()
    assert counts[("run_owed", "FAILED")] == 1


async def test_an_incident_is_acknowledged_from_any_replica(
    tmp_path: Path, redis: RedisServer
) -> None:
    world = World()  # run_gone is not there: its watch cannot see it, an incident opens
    async with stage(tmp_path, world) as st:
        config = st.config(redis.url, ["run_gone"])
        for name in ("r0", "r1"):
            await st.start(name, config)
        owner = await st.sole_owner(["r0", "r1"])
        other = st.replicas["r1" if owner == "r0" else "r0"]
        with anyio.fail_after(30):
            await st.receiver.wait_until(
                lambda rs: any(e["kind"] == "watch.error" for r in rs for e in r.events)
            )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{other.port}", timeout=5) as c:
            with anyio.fail_after(30):
                while not (listed := (await c.get("/incidents?open=true")).json()["incidents"]):  # noqa: ASYNC110 - polling another process
                    await anyio.sleep(0.1)
            (incident,) = listed
            assert incident["elsewhere"] is True  # the owner holds it; Redis shares it
            answer = await c.post(f"/incidents/{incident['id']}/ack", json={"by": "ana"})
            assert answer.status_code == 202, answer.text
            assert "applies it" in answer.json()["incident"]["pending"]
            with anyio.fail_after(30):
                await st.receiver.wait_until(
                    lambda rs: any(
                        e["kind"] == "incident.acknowledged" for r in rs for e in r.events
                    )
                )
            with anyio.fail_after(10):
                state = ""
                while state != "acknowledged":
                    await anyio.sleep(0.1)
                    state = (await c.get(f"/incidents/{incident['id']}")).json()["incident"][
                        "state"
                    ]
    acks = [e for e in st.receiver.events() if e["kind"] == "incident.acknowledged"]
    assert len(acks) == 1
    assert acks[0]["details"]["by"] == "ana"
