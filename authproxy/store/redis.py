"""The production store: Redis (standalone, Sentinel-fronted or a managed one).

Each record is a hash `{prefix}:token:{app}:{shop}` holding `v` (version) and
`data` (JSON). Writes are compare-and-set in Lua; locks are redis-py's
owner-token locks (SET NX PX + Lua compare-and-delete on release).

Call slots of a key live in `{prefix}:slots:{app:shop}:*` (one hash tag, so
one script may touch them all): `leases` (ZSET lease -> expiry ms), `queue`
(ZSET waiter -> ticket), `seen` (ZSET waiter -> last ask ms) and `ticket` (a
counter). The scripts read the time from Redis (TIME), so processes on hosts
with skewed clocks agree on when a lease has expired.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

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
        raise StoreUnavailable(f"token store unreachable ({type(exc).__name__})") from exc


class RedisLock:
    def __init__(self, client: aioredis.Redis, name: str, ttl: float) -> None:
        self._lock = Lock(client, name, timeout=ttl, blocking=False, thread_local=False)

    async def acquire(self) -> bool:
        async with _reachable():
            return bool(await self._lock.acquire())

    async def release(self) -> None:
        try:
            await self._lock.release()
        except LockError:
            pass  # expired and maybe taken by another owner: theirs now, leave it
        except (RedisError, OSError):
            pass  # it expires by itself after its TTL


class RedisStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "authproxy") -> None:
        self.client = client
        self.prefix = prefix
        self._cas: Any = client.register_script(COMPARE_AND_SET)
        self._acquire_slot: Any = client.register_script(ACQUIRE_SLOT)
        self._renew_slot: Any = client.register_script(RENEW_SLOT)

    @classmethod
    def from_url(cls, url: str, prefix: str = "authproxy") -> RedisStore:
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
        )
        return cls(client, prefix)

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
            result = await self._cas(keys=[self._name("token", key)], args=[expected_version, encode(record)])
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
        args = [lease, limit, _ms(ttl), _ms(SLOT_WAITER_TTL)]
        async with _reachable():
            return bool(await self._acquire_slot(keys=self._slot_names(key), args=args))

    async def renew_slot(self, key: TokenKey, lease: str, ttl: float) -> bool:
        async with _reachable():
            return bool(await self._renew_slot(keys=self._slot_names(key)[:1], args=[lease, _ms(ttl)]))

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
