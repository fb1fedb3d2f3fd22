"""The production store: Redis (standalone, Sentinel-fronted or a managed one).

Each record is a hash `{prefix}:token:{app}:{shop}` holding `v` (version) and
`data` (JSON). Writes are compare-and-set in Lua; locks are redis-py's
owner-token locks (SET NX PX + Lua compare-and-delete on release).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from authproxy.errors import StoreUnavailable
from authproxy.models import TokenKey, TokenRecord
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

POLL_FIRST, POLL_MAX = 0.01, 0.25


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

    async def ping(self) -> None:
        async with _reachable():
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
