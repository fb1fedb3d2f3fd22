"""The production store: Redis (standalone or managed; redis://, rediss://, unix://).

Each record is a hash `{prefix}:token:{app}:{shop}` holding `v` (version) and
`data` (JSON). Writes are compare-and-set in Lua; locks are owner-token locks
as in redis-py's `Lock` (SET NX PX with a random owner; Lua compare-and-delete
on release). Scripts go by EVAL, not EVALSHA: they are tiny, Redis caches
them, and no NOSCRIPT round trip (or reconnect) ever happens.

Call slots of a key live in `{prefix}:slots:{app:shop}:*` (one hash tag, so
one script may touch them all): `leases` (ZSET lease -> expiry ms), `queue`
(ZSET waiter -> ticket), `seen` (ZSET waiter -> last ask ms) and `ticket` (a
counter). The scripts read the time from Redis (TIME), so processes on hosts
with skewed clocks agree on when a lease has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from authproxy.errors import StoreUnavailable
from authproxy.models import TokenKey, TokenRecord
from authproxy.store import SLOT_WAITER_TTL
from authproxy.store.codec import decode, encode

# KEYS[1] record; ARGV[1] expected version (-1: any); ARGV[2] data -> new version or -1
COMPARE_AND_SET = """
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if tonumber(ARGV[1]) ~= -1 and current ~= tonumber(ARGV[1]) then
  return -1
end
redis.call('HSET', KEYS[1], 'v', current + 1, 'data', ARGV[2])
return current + 1
"""

# KEYS[1] lock; ARGV[1] owner -> 1 if released
COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
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


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


@asynccontextmanager
async def _reachable() -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError) as exc:
        # the type only: the client library's message names Redis's host, which callers need not see
        raise StoreUnavailable(f"token store unreachable ({type(exc).__name__})") from exc


class RedisLock:
    """One attempt: a fresh random owner; only that owner can release it."""

    def __init__(self, client: aioredis.Redis, name: str, ttl: float) -> None:
        self.client, self.name, self.ttl_ms = client, name, _ms(ttl)
        self.owner = secrets.token_hex(16)

    async def acquire(self) -> bool:
        async with _reachable():
            return bool(await self.client.set(self.name, self.owner, nx=True, px=self.ttl_ms))

    async def release(self) -> None:
        # If it expired and another owner holds it now, it is theirs: the script leaves it.
        with contextlib.suppress(RedisError, OSError):  # else it expires by itself
            await self.client.eval(COMPARE_AND_DELETE, 1, self.name, self.owner)


class RedisStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "authproxy") -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "authproxy", connections: int = 50) -> RedisStore:
        # A blocking pool: past `connections` busy ones a command waits for a free
        # connection (up to 5 s) instead of failing, as the default pool does.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=connections,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
        return cls(aioredis.Redis(connection_pool=pool), prefix)

    def _name(self, kind: str, key: TokenKey) -> str:
        return f"{self.prefix}:{kind}:{key.app}:{key.shop}"

    async def get(self, key: TokenKey) -> TokenRecord | None:
        async with _reachable():
            version, data = await self.client.hmget(self._name("token", key), ["v", "data"])
        if data is None:
            return None
        return decode(data, int(version or 0))

    async def put(self, key: TokenKey, record: TokenRecord, *, expected_version: int) -> int | None:
        async with _reachable():
            result = await self.client.eval(
                COMPARE_AND_SET, 1, self._name("token", key), expected_version, encode(record)
            )
        return None if int(result) < 0 else int(result)

    async def delete(self, key: TokenKey) -> bool:
        async with _reachable():
            return bool(await self.client.delete(self._name("token", key)))

    async def keys(self) -> list[TokenKey]:
        head = f"{self.prefix}:token:"
        found = []
        async with _reachable():
            async for raw in self.client.scan_iter(match=head + "*", count=500):
                app, _, shop = raw.decode()[len(head) :].partition(":")
                found.append(TokenKey(app, shop))
        return sorted(found, key=str)

    def lock(self, key: TokenKey, ttl: float) -> RedisLock:
        return RedisLock(self.client, self._name("lock", key), ttl)

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
        head = f"{self.prefix}:slots:{{{key.app}:{key.shop}}}:"
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
        async with _reachable():
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
