"""The production store: Redis - standalone or managed (redis://, rediss://, unix://),
Sentinel (redis+sentinel://) or Cluster (redis+cluster://); every command goes through
gateway.py (pool, deadline, failover, WAIT).

Each record is a hash `{prefix}:token:{app:shop}` (names.py) holding `v` (version) and
`data` (JSON). Writes are compare-and-set in Lua; locks are owner-token locks
as in redis-py's `Lock` (SET NX PX with a random owner; Lua compare-and-delete
on release). Scripts go by EVAL, not EVALSHA: they are tiny, Redis caches
them, and no NOSCRIPT round trip (or reconnect) ever happens.

Call slots of a key live in `{prefix}:slots:{app:shop}:*` (the shop's hash tag, so
one script may touch them all, in Cluster too): `leases` (ZSET lease -> expiry ms), `queue`
(ZSET waiter -> ticket), `seen` (ZSET waiter -> last ask ms) and `ticket` (a
counter). The scripts read the time from Redis (TIME), so processes on hosts
with skewed clocks agree on when a lease has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import redis.asyncio as aioredis

from authproxy.errors import StoreUnavailable, WriteUnconfirmed
from authproxy.keyring import Keyring
from authproxy.models import TokenKey, TokenRecord
from authproxy.settings import StoreSettings
from authproxy.store.base import SLOT_WAITER_TTL, RawRecord
from authproxy.store.codec import decode, encode
from authproxy.store.gateway import (
    UNREACHABLE,
    GatedCluster,
    ReplicaCounts,
    close,
    connect,
    scan_names,
    write_and_wait,
)
from authproxy.store.names import legacy_key, parse_shop_key, shop_key

# KEYS[1] record; ARGV[1] expected version (-1: any); ARGV[2] data -> new version or -1
COMPARE_AND_SET = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if tonumber(ARGV[1]) ~= -1 and current ~= tonumber(ARGV[1]) then
  return -1
end
redis.call('HSET', KEYS[1], 'v', current + 1, 'data', ARGV[2])
redis.call('HDEL', KEYS[1], 'spending')
return current + 1
"""

# KEYS[1] record; ARGV[1] expected version; ARGV[2] owner -> 1 marked, 0 version moved
MARK_SPENDING = """
if tonumber(redis.call('HGET', KEYS[1], 'v') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'spending', ARGV[2])
return 1
"""

# KEYS[1] lock; ARGV[1] owner, ARGV[2] ttl ms -> {-1, owner} taken, else {the holder's ms left,
# the holder}. Taken also when the holder is this owner: a retry after a lost answer.
ACQUIRE_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {-1, ARGV[1]}
end
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return {-1, holder}
end
return {redis.call('PTTL', KEYS[1]), holder}
"""

# KEYS[1] lock; ARGV[1] owner -> 1 if released
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] tagged name, KEYS[2] name before hash tags -> 1 moved, 0 nothing to move
ADOPT_LEGACY = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
return 1
"""

NOW_MS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS leases, queue, seen, ticket; ARGV[1] lease, ARGV[2] limit, ARGV[3] ttl ms,
# ARGV[4] waiter ttl ms -> 1 taken, 0 queued
ACQUIRE_SLOT = (
    NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[4]))
for _, waiter in ipairs(gone) do
  redis.call('ZREM', KEYS[2], waiter)
  redis.call('ZREM', KEYS[3], waiter)
end
local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
local ahead = redis.call('ZRANK', KEYS[2], ARGV[1])
if not ahead then
  ahead = redis.call('ZCARD', KEYS[2])
end
if ahead < free then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
end
redis.call('ZADD', KEYS[3], now, ARGV[1])
for i = 2, 4 do
  redis.call('PEXPIRE', KEYS[i], ARGV[4])
end
return 0
"""
)

# KEYS leases; ARGV[1] lease, ARGV[2] ttl ms -> 1 renewed, 0 expired
RENEW_SLOT = (
    NOW_MS
    + """
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) <= now then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

POLL_FIRST, POLL_MAX = 0.01, 0.25
PING_DEADLINE = 1.0


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    try:
        yield
    except UNREACHABLE as exc:
        # the type only: the client library's message names Redis's host, which callers need not see
        raise StoreUnavailable(f"token store unreachable ({type(exc).__name__})") from exc


class RedisLock:
    """One attempt: a fresh random owner; only that owner can release it."""

    def __init__(self, client: aioredis.Redis, name: str, ttl: float, owner: str | None = None) -> None:
        self.client, self.name, self.ttl_ms = client, name, _ms(ttl)
        self.owner = owner or secrets.token_hex(16)
        self.holder_ttl, self.holder = 0.0, ""

    async def acquire(self) -> bool:
        async with _reachable():
            left, holder = await self.client.eval(ACQUIRE_LOCK, 1, self.name, self.owner, self.ttl_ms)
        self.holder = holder.decode() if isinstance(holder, bytes) else str(holder)
        self.holder_ttl = max(int(left), 0) / 1000
        return int(left) == -1

    async def release(self) -> None:
        # If it expired and another owner holds it now, it is theirs: the script leaves it.
        with contextlib.suppress(*UNREACHABLE):  # else it expires by itself
            await self.client.eval(COMPARE_AND_DELETE, 1, self.name, self.owner)


class RedisStore:
    def __init__(
        self, client: aioredis.Redis, settings: StoreSettings | None = None, keyring: Keyring | None = None
    ) -> None:
        self.client = client
        self.settings = settings or StoreSettings()
        self.prefix = self.settings.key_prefix
        self.keyring = keyring  # seals the records' secrets (codec.py); None: plain
        self._replicas = ReplicaCounts()

    @classmethod
    def from_settings(cls, settings: StoreSettings, keyring: Keyring | None = None) -> RedisStore:
        """Standalone, Sentinel or Cluster, as `settings.url` says (gateway.py)."""
        # a GatedCluster speaks the same command API as the standalone client
        return cls(cast(aioredis.Redis, connect(settings)), settings, keyring)

    @classmethod
    def from_url(cls, url: str, prefix: str = "authproxy", keyring: Keyring | None = None) -> RedisStore:
        return cls.from_settings(StoreSettings(url=url, key_prefix=prefix), keyring)

    def _name(self, kind: str, key: TokenKey) -> str:
        return shop_key(self.prefix, kind, key)

    async def get(self, key: TokenKey) -> TokenRecord | None:
        name = self._name("token", key)
        async with _reachable():
            version, data, spending = await self.client.hmget(name, ["v", "data", "spending"])
            if data is None and spending is None and await self._adopt_legacy(key):
                version, data, spending = await self.client.hmget(name, ["v", "data", "spending"])
        owner = spending.decode() if isinstance(spending, bytes) else (spending or "")
        if data is None:
            return TokenRecord(token=None, spending=owner) if owner else None
        record = decode(data, int(version or 0), key, self.keyring)
        return dataclasses.replace(record, spending=owner) if owner else record

    async def mark_spending(self, key: TokenKey, version: int, owner: str) -> bool:
        async with _reachable():
            return bool(await self.client.eval(MARK_SPENDING, 1, self._name("token", key), version, owner))

    async def put(
        self, key: TokenKey, record: TokenRecord, *, expected_version: int, durable: bool = False
    ) -> int | None:
        name, data = self._name("token", key), encode(record, key, self.keyring)
        pause = self.settings.write_backoff
        for _ in range(self.settings.write_attempts - 1 if durable else 0):
            try:
                return await self._compare_and_set(name, expected_version, data, durable)
            except WriteUnconfirmed:
                raise  # it landed on the master: the caller keeps the pair and re-asserts it
            except StoreUnavailable:
                await asyncio.sleep(pause)
                pause *= 2
        return await self._compare_and_set(name, expected_version, data, durable)

    async def _compare_and_set(
        self, name: str, expected_version: int, data: str, durable: bool
    ) -> int | None:
        """The write; for a new pair (`durable`) then WAIT for the replicas it must reach
        (WriteUnconfirmed when fewer acknowledge: a failover now could lose it)."""
        async with _reachable():
            wanted = (
                await self._replicas.wanted(self.client, name, self.settings.wait_replicas) if durable else 0
            )
            if not wanted:
                result = await self.client.eval(COMPARE_AND_SET, 1, name, expected_version, data)
                return None if int(result) < 0 else int(result)
            result, acked = await write_and_wait(
                self.client, COMPARE_AND_SET, [name], [expected_version, data], wanted, self.settings.wait_ms
            )
        if int(result) < 0:
            return None
        if acked < wanted:
            self._replicas.forget(self.client, name)
            raise WriteUnconfirmed(f"{acked} of {wanted} replicas confirmed the write")
        return int(result)

    async def _adopt_legacy(self, key: TokenKey) -> bool:
        """Move a record from its name before hash tags to its tagged one (never over a
        tagged record). Not in Cluster: no deployment of it predates the tags."""
        if isinstance(self.client, GatedCluster):
            return False
        names = (self._name("token", key), legacy_key(self.prefix, "token", key))
        return bool(await self.client.eval(ADOPT_LEGACY, 2, *names))

    async def delete(self, key: TokenKey) -> bool:
        async with _reachable():
            await self._adopt_legacy(key)
            return bool(await self.client.delete(self._name("token", key)))

    async def keys(self) -> list[TokenKey]:
        found: set[TokenKey] = set()
        async for names in self._record_names(500):
            found.update(parse_shop_key(self.prefix, "token", name)[0] for name in names)
        return sorted(found, key=str)

    async def _record_names(self, batch: int) -> AsyncIterator[list[str]]:
        """Every record's (tagged) name, about `batch` at a time; legacy ones are adopted."""
        names_of = scan_names(self.client, f"{self.prefix}:token:*", batch)
        while True:
            async with _reachable():
                raw = await anext(names_of, None)
                if raw is None:
                    return
                names = []
                for item in raw:
                    name = item.decode() if isinstance(item, bytes) else item
                    key, legacy = parse_shop_key(self.prefix, "token", name)
                    if legacy:
                        await self._adopt_legacy(key)
                        name = self._name("token", key)
                    names.append(name)
            yield names

    async def raw_records(self, batch: int = 500) -> AsyncIterator[list[RawRecord]]:
        """Every record as stored, about `batch` at a time: one SCAN step, one pipeline."""
        async for names in self._record_names(batch):
            async with _reachable(), self.client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hmget(name, ["v", "data"])
                rows = await pipe.execute()
            found = []
            for name, (version, data) in zip(names, rows, strict=True):
                if data is not None:  # deleted since the SCAN step
                    key = parse_shop_key(self.prefix, "token", name)[0]
                    found.append(RawRecord(key, int(version or 0), data))
            if found:
                yield found

    def lock(self, key: TokenKey, ttl: float, owner: str | None = None) -> RedisLock:
        return RedisLock(self.client, self._name("lock", key), ttl, owner)

    async def _version(self, key: TokenKey) -> int:
        async with _reachable():
            raw = await self.client.hget(self._name("token", key), "v")
        return int(raw or 0)

    async def wait_for_change(self, key: TokenKey, version: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = POLL_FIRST
        while await self._version(key) == version:
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 1.5, POLL_MAX)
        return True

    def _slot_names(self, key: TokenKey) -> list[str]:
        head = shop_key(self.prefix, "slots", key) + ":"
        return [head + part for part in ("leases", "queue", "seen", "ticket")]

    async def acquire_slot(self, key: TokenKey, lease: str, limit: int, ttl: float) -> bool:
        args: list[str | int] = [lease, limit, _ms(ttl), _ms(SLOT_WAITER_TTL)]
        async with _reachable():
            return bool(await self.client.eval(ACQUIRE_SLOT, 4, *self._slot_names(key), *args))

    async def renew_slot(self, key: TokenKey, lease: str, ttl: float) -> bool:
        leases = self._slot_names(key)[0]
        async with _reachable():
            return bool(await self.client.eval(RENEW_SLOT, 1, leases, lease, _ms(ttl)))

    async def release_slot(self, key: TokenKey, lease: str) -> None:
        leases, queue, seen, _ = self._slot_names(key)
        async with _reachable(), self.client.pipeline(transaction=False) as pipe:
            for name in (leases, queue, seen):
                pipe.zrem(name, lease)
            await pipe.execute()

    async def ping(self) -> None:
        """Readiness: answers within PING_DEADLINE (a probe's timeout is short), where other
        calls ride out a failover for up to the store's whole `timeout`."""
        async with _reachable(), asyncio.timeout(min(PING_DEADLINE, self.settings.timeout)):
            await self.client.ping()

    async def close(self) -> None:
        await close(self.client)
