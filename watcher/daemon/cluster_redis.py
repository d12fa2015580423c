"""The cluster's Redis calls: membership, watch leases with a fencing epoch, shared state,
the notification log. Each is one round trip (a Lua script or a pipeline) under a deadline.

Keys (``p`` is ``cluster.prefix``):

- ``p member:<name>`` = the instance id, TTL ``lease``; ``p members`` a sorted set of the
  names scored by their key's expiry (so the live members are listed in one call), and
  ``p info`` a hash of what each member last reported (for ``run-watcher cluster``).
- ``p lease:<watch>`` = ``<instance>|<epoch>``, TTL ``lease``; ``p epoch:<watch>`` the
  counter an acquisition increments. A write carries the token it was given and is
  refused when the lease no longer says exactly that: a replica that was paused or cut
  off cannot overwrite what its successor wrote.
- ``p state:<watch>`` the watch's durable state (JSON), TTL ``state_ttl``.
- ``p nlog:<notifier>:<event>`` ``c|<instance>`` while a send is claimed, ``s|<instance>``
  once sent.
- ``p silences``, ``p api-watches``: hashes of what the API added, cluster-wide.

Plain Redis (7 or later) or Valkey, one node (or a primary with replicas): the scripts
touch several keys, which Redis Cluster would need in one hash slot.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

__all__ = ["ClusterRedis", "RedisUnavailable", "StoredWatch"]

_T = TypeVar("_T")

_MEMBER = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return {0, cur} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, name in ipairs(dead) do redis.call('HDEL', KEYS[3], name) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
return {1, redis.call('ZRANGE', KEYS[2], 0, -1)}
"""

_LEAVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
end
return 1
"""

# Take a free lease (a new epoch) or renew one this instance holds; -1: another holds it.
_LEASE = """
local out = {}
for i = 1, #KEYS, 2 do
  local cur = redis.call('GET', KEYS[i])
  if not cur then
    local e = redis.call('INCR', KEYS[i + 1])
    redis.call('PEXPIRE', KEYS[i + 1], ARGV[3])
    redis.call('SET', KEYS[i], ARGV[1] .. '|' .. e, 'PX', ARGV[2])
    out[#out + 1] = e
  else
    local sep = string.find(cur, '|', 1, true)
    if sep and string.sub(cur, 1, sep - 1) == ARGV[1] then
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
      out[#out + 1] = tonumber(string.sub(cur, sep + 1))
    else
      out[#out + 1] = -1
    end
  end
end
return out
"""

_RELEASE = """
local prefix = ARGV[1] .. '|'
for i = 1, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  if cur and string.sub(cur, 1, #prefix) == prefix then redis.call('DEL', KEYS[i]) end
end
return 1
"""

# KEYS: (lease, state) pairs; ARGV: ttl, then (token, data) pairs ('' deletes).
_WRITE = """
local out = {}
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    if ARGV[i + 2] == '' then
      redis.call('DEL', KEYS[i + 1])
    else
      redis.call('SET', KEYS[i + 1], ARGV[i + 2], 'PX', ARGV[1])
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

_CLAIM = """
local mine = 'c|' .. ARGV[1]
local out = {}
for i = 1, #KEYS do
  if redis.call('SET', KEYS[i], mine, 'NX', 'PX', ARGV[2]) then
    out[#out + 1] = 1
  else
    local cur = redis.call('GET', KEYS[i])
    if cur == mine then
      out[#out + 1] = 1
    elseif cur and string.sub(cur, 1, 2) == 's|' then
      out[#out + 1] = 2
    else
      out[#out + 1] = 0
    end
  end
end
return out
"""


class RedisUnavailable(Exception):
    """Redis did not answer in time, refused us, or is not a Redis; ``str()`` says which
    (never the password)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        """An answer that retrying will not change (a refused password, not a Redis)."""


@dataclass(frozen=True, slots=True)
class StoredWatch:
    """A watch's state as its holder last wrote it."""

    key: str
    subject: str
    parent: str | None
    state: dict[str, Any]
    finished_at: float | None
    written_at: float
    """Unix time of the write (the freshest copy wins after a fail-open)."""
    owed: list[dict[str, Any]]
    """The events the write's change owed notifiers (sent again by a successor)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class ClusterRedis:
    """Typed, deadline-bound calls for one replica (``instance`` is unique per process)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        name: str,
        instance: str,
        lease: float,
        timeout: float,
        state_ttl: float,
        where: str,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.name = name
        self.instance = instance
        self.lease = lease
        self.timeout = timeout
        self.state_ttl = state_ttl
        self.where = where
        self.commands = 0
        """Round trips made (``bench/cluster.py`` counts them per poll)."""
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("member", _MEMBER),
                ("leave", _LEAVE),
                ("lease", _LEASE),
                ("release", _RELEASE),
                ("write", _WRITE),
                ("claim", _CLAIM),
            )
        }

    def key(self, *parts: str) -> str:
        """A key under the prefix."""
        return self.prefix + ":".join(parts)

    async def _call(self, what: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        self.commands += 1
        try:
            with anyio.fail_after(self.timeout):
                return await fn()
        except TimeoutError:
            raise RedisUnavailable(
                f"Redis at {self.where}: no answer to {what} within {self.timeout:g}s"
            ) from None
        except AuthenticationError as exc:
            raise RedisUnavailable(
                f"Redis at {self.where} refused the password ({type(exc).__name__})",
                permanent=True,
            ) from None
        except ResponseError as exc:
            text = str(exc).split("\n", 1)[0][:200]
            permanent = "NOAUTH" in text or "WRONGPASS" in text or "unknown command" in text
            raise RedisUnavailable(
                f"Redis at {self.where} answered {what} with an error: {text}",
                permanent=permanent,
            ) from None
        except (RedisError, OSError) as exc:
            reason = str(exc).split("\n", 1)[0][:200] or type(exc).__name__
            raise RedisUnavailable(f"Redis at {self.where}: {reason}") from None

    async def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        script = self._scripts[name]
        return await self._call(name, lambda: script(keys=list(keys), args=list(args)))

    # -- membership ---------------------------------------------------------------------------

    async def hello(self) -> str:
        """Check that Redis is a Redis 7 or later that takes our password; its version."""
        info: dict[str, Any] = await self._call("INFO", lambda: self.client.info("server"))
        version = str(info.get("redis_version") or info.get("valkey_version") or "")
        major = version.split(".", 1)[0]
        if not major.isdigit():
            raise RedisUnavailable(
                f"{self.where} does not look like a Redis (INFO has no version)", permanent=True
            )
        if int(major) < 7 and "valkey_version" not in info:
            raise RedisUnavailable(
                f"Redis at {self.where} is {version}; the cluster needs Redis 7 or Valkey",
                permanent=True,
            )
        return version

    async def renew_member(self, info: dict[str, Any]) -> list[str] | str:
        """Renew this member's key; the live members, or the instance id of another live
        replica that holds this name."""
        keys = [self.key("member", self.name), self.key("members"), self.key("info")]
        args = [self.instance, self.name, _ms(self.lease), json.dumps(info)]
        ok, value = await self._script("member", keys, args)
        if not ok:
            return _text(value)
        return [_text(m) for m in value]

    async def leave(self) -> None:
        """Give this member's key back at once (a clean stop), so others take over now."""
        keys = [self.key("member", self.name), self.key("members"), self.key("info")]
        await self._script("leave", keys, [self.instance, self.name])

    async def member_info(self) -> dict[str, dict[str, Any]]:
        """What each live member last reported."""
        raw = await self._call("HGETALL", lambda: self.client.hgetall(self.key("info")))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    # -- leases ---------------------------------------------------------------------------------

    async def leases(self, watches: Sequence[str]) -> dict[str, int]:
        """Take or renew the leases of ``watches``; the epoch of each one this replica holds."""
        if not watches:
            return {}
        keys: list[str] = []
        for watch in watches:
            keys += [self.key("lease", watch), self.key("epoch", watch)]
        args = [self.instance, _ms(self.lease), _ms(self.state_ttl)]
        epochs = await self._script("lease", keys, args)
        return {w: int(e) for w, e in zip(watches, epochs, strict=True) if int(e) > 0}

    async def release(self, watches: Sequence[str]) -> None:
        """Give leases back (this replica no longer wins them, or it stops)."""
        if watches:
            keys = [self.key("lease", w) for w in watches]
            await self._script("release", keys, [self.instance])

    def token(self, epoch: int) -> str:
        """What a lease says while this replica holds it at ``epoch``."""
        return f"{self.instance}|{epoch}"

    # -- state ----------------------------------------------------------------------------------

    async def write(self, writes: Sequence[tuple[str, int, dict[str, Any] | None]]) -> list[str]:
        """Write watch states under their leases (``(watch, epoch, data or None)``); the
        watches whose write was refused because the lease is no longer this epoch's."""
        if not writes:
            return []
        keys: list[str] = []
        args: list[Any] = [_ms(self.state_ttl)]
        for watch, epoch, data in writes:
            keys += [self.key("lease", watch), self.key("state", watch)]
            args += [self.token(epoch), "" if data is None else json.dumps(data)]
        done = await self._script("write", keys, args)
        return [w for (w, _, _), ok in zip(writes, done, strict=True) if not int(ok)]

    async def read(self, watches: Sequence[str]) -> dict[str, StoredWatch]:
        """The stored states of ``watches`` that have one."""
        if not watches:
            return {}
        keys = [self.key("state", w) for w in watches]
        raw = await self._call("MGET", lambda: self.client.mget(keys))
        found: dict[str, StoredWatch] = {}
        for watch, value in zip(watches, raw, strict=True):
            if value is None:
                continue
            doc = json.loads(value)
            found[watch] = StoredWatch(
                key=watch,
                subject=doc["subject"],
                parent=doc.get("parent"),
                state=doc["state"],
                finished_at=doc.get("finished_at"),
                written_at=float(doc["t"]),
                owed=list(doc.get("owed") or []),
            )
        return found

    async def children(self, parent: str) -> list[str]:
        """The watch keys stored under ``parent`` (a ``trigger_runs`` watch's runs)."""
        pattern = self.key("state", parent) + "/*"
        start = len(self.key("state"))

        async def scan() -> list[str]:
            return [_text(k)[start:] async for k in self.client.scan_iter(pattern, count=1000)]

        return await self._call("SCAN", scan)

    # -- the notification log ------------------------------------------------------------------

    async def claim(
        self, notifier: str, event_ids: Sequence[str], ttl: float
    ) -> tuple[set[str], set[str]]:
        """Claim the sends of ``event_ids`` to ``notifier``: the ids another replica sent,
        and those another is sending now (its claim expires if it dies)."""
        if not event_ids:
            return set(), set()
        keys = [self.key("nlog", notifier, e) for e in event_ids]
        got = await self._script("claim", keys, [self.instance, _ms(ttl)])
        pairs = list(zip(event_ids, (int(g) for g in got), strict=True))
        return {e for e, g in pairs if g == 2}, {e for e, g in pairs if g == 0}

    async def sent(self, notifier: str, event_ids: Sequence[str], keep: float) -> None:
        """Mark ``event_ids`` sent to ``notifier`` (kept ``keep`` seconds)."""
        if not event_ids:
            return

        async def mark() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for e in event_ids:
                    pipe.set(self.key("nlog", notifier, e), f"s|{self.instance}", px=_ms(keep))
                await pipe.execute()

        await self._call("SET nlog", mark)

    async def get_ref(self, notifier: str, incident: str) -> dict[str, Any] | None:
        """What a notifier did for an incident (a Slack message's ts), any replica's."""
        raw = await self._call(
            "GET ref", lambda: self.client.get(self.key("ref", notifier, incident))
        )
        return json.loads(raw) if raw else None

    async def put_ref(
        self, notifier: str, incident: str, data: dict[str, Any] | None, keep: float
    ) -> None:
        """Keep (``keep`` seconds) or forget what a notifier did for an incident."""
        key = self.key("ref", notifier, incident)
        if data is None:
            await self._call("DEL ref", lambda: self.client.delete(key))
        else:
            text = json.dumps(data, separators=(",", ":"))
            await self._call("SET ref", lambda: self.client.set(key, text, px=_ms(keep)))

    # -- what the API added, cluster-wide --------------------------------------------------------

    async def put_entry(self, table: str, ident: str, entry: dict[str, Any] | None) -> None:
        """Keep (or with ``None`` forget) an API silence or watch for every replica."""
        await self.put_entries(table, [(ident, entry)])

    async def put_entries(
        self, table: str, items: Sequence[tuple[str, dict[str, Any] | None]]
    ) -> None:
        """Keep or forget several entries of ``table`` in one round trip."""
        key = self.key(table)

        async def put() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for ident, entry in items:
                    if entry is None:
                        pipe.hdel(key, ident)
                    else:
                        pipe.hset(key, ident, json.dumps(entry))
                await pipe.execute()

        await self._call("HSET", put)

    async def entries(self, table: str) -> dict[str, dict[str, Any]]:
        """Every API silence or watch the cluster holds."""
        raw = await self._call("HGETALL", lambda: self.client.hgetall(self.key(table)))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    async def close(self) -> None:
        """Close the connections, shielded and bounded: a stop must not hang on Redis."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.timeout):
            await self.client.aclose()
