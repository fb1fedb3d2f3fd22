"""The keep-alive due index: when each shop is next due, claimed by replicas with a lease.

One sorted set per app, `{prefix}:due:{<app>}`: member = shop, score = the
Unix time it falls due. `claim` is one Lua script that takes the shops due
by now, most overdue first, and pushes each one's score to now + lease, so
no other replica sees it due while the claimer works on it. The claimer then
`schedule`s the shop's next due time (or `unschedule`s it); a claimer that
dies mid-work does nothing, and the shop falls due again when its lease
ends. "Now" is Redis's clock (TIME) unless the caller passes one, so
replicas with skewed clocks agree on when a lease has ended.

A claim may also spend a per-app budget, `per_minute` claims a minute across
all replicas (a token bucket in `{prefix}:due-budget:{<app>}`: full at
`per_minute`, refilled continuously), so thousands of shops falling due at
once reach the platform's token endpoint at a bounded rate. Both keys carry
the app as their hash tag: one script on one Cluster slot.

Cost: `claim` is one round trip whatever the set's size (ZRANGEBYSCORE with
LIMIT, then one ZADD of the claimed members; HMGET/HSET of the budget):
O(log N + claimed).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis

from authproxy.models import TokenKey
from authproxy.store.names import app_tag
from authproxy.store.redis import _reachable

# KEYS[1] due set, KEYS[2] budget; ARGV[1] now ("" = Redis TIME), ARGV[2] lease seconds,
# ARGV[3] limit, ARGV[4] claims per minute (0: no budget) -> shops
CLAIM = """
local now = tonumber(ARGV[1])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
end
local limit = tonumber(ARGV[3])
local rate = tonumber(ARGV[4])
local tokens = 0
if rate > 0 then
  local state = redis.call('HMGET', KEYS[2], 'tokens', 'at')
  tokens = tonumber(state[1]) or rate
  local since = now - (tonumber(state[2]) or now)
  tokens = math.min(rate, tokens + math.max(since, 0) * rate / 60)
  limit = math.min(limit, math.floor(tokens))
  if limit < 1 then
    return {}
  end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
if #due == 0 then
  return due
end
local until_ = string.format('%.3f', now + tonumber(ARGV[2]))
local pairs_ = {}
for i, shop in ipairs(due) do
  pairs_[2 * i - 1] = until_
  pairs_[2 * i] = shop
end
redis.call('ZADD', KEYS[1], 'XX', unpack(pairs_))
if rate > 0 then
  local left = string.format('%.6f', tokens - #due)
  redis.call('HSET', KEYS[2], 'tokens', left, 'at', string.format('%.6f', now))
  redis.call('EXPIRE', KEYS[2], 120)
end
return due
"""


MAX_CLAIM = 1000  # shops per claim (the script passes 2 arguments per shop to one ZADD)


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_CLAIM:
        raise ValueError(f"claim limit must be 1..{MAX_CLAIM}, not {limit}")


class DueIndex(Protocol):
    async def schedule(self, key: TokenKey, due: float, *, only_new: bool = False) -> None:
        """The shop falls due at `due` (Unix seconds); replaces its time or lease, unless
        `only_new` (seeding: a shop already in the index keeps its time and any lease)."""

    async def unschedule(self, key: TokenKey) -> None: ...

    async def due_at(self, key: TokenKey) -> float | None: ...

    async def claim(
        self, app: str, *, limit: int, lease: float, now: float | None = None, per_minute: int = 0
    ) -> list[TokenKey]:
        """Up to `limit` of the app's shops due by `now` (None: the store's clock), most
        overdue first, each leased for `lease` seconds: due again then unless rescheduled.
        `per_minute` > 0: no more than that many claimed a minute for the app, by anyone."""

    async def size(self, app: str) -> int: ...

    async def members(self, app: str) -> set[str]:
        """Every shop of the app in the index (start-up seeding skips these)."""


class RedisDueIndex:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    def name(self, app: str) -> str:
        return f"{self.prefix}:due:{app_tag(app)}"

    def budget_name(self, app: str) -> str:
        return f"{self.prefix}:due-budget:{app_tag(app)}"

    async def schedule(self, key: TokenKey, due: float, *, only_new: bool = False) -> None:
        async with _reachable():
            await self.client.zadd(self.name(key.app), {key.shop: due}, nx=only_new)

    async def unschedule(self, key: TokenKey) -> None:
        async with _reachable():
            await self.client.zrem(self.name(key.app), key.shop)

    async def due_at(self, key: TokenKey) -> float | None:
        async with _reachable():
            score = await self.client.zscore(self.name(key.app), key.shop)
        return None if score is None else float(score)

    async def claim(
        self, app: str, *, limit: int, lease: float, now: float | None = None, per_minute: int = 0
    ) -> list[TokenKey]:
        _check_limit(limit)
        at = "" if now is None else repr(now)
        keys = (self.name(app), self.budget_name(app))
        async with _reachable():
            shops = await self.client.eval(CLAIM, 2, *keys, at, lease, limit, per_minute)
        return [TokenKey(app, shop.decode() if isinstance(shop, bytes) else str(shop)) for shop in shops]

    async def size(self, app: str) -> int:
        async with _reachable():
            return int(await self.client.zcard(self.name(app)))

    async def members(self, app: str) -> set[str]:
        async with _reachable():
            shops = await self.client.zrange(self.name(app), 0, -1)
        return {shop.decode() if isinstance(shop, bytes) else str(shop) for shop in shops}


@dataclass
class MemoryDueIndex:
    """The same semantics in one process; "now" defaults to the wall clock."""

    due: dict[str, dict[str, float]] = field(default_factory=dict)
    budgets: dict[str, tuple[float, float]] = field(default_factory=dict)  # app -> (tokens, at)

    async def schedule(self, key: TokenKey, due: float, *, only_new: bool = False) -> None:
        shops = self.due.setdefault(key.app, {})
        if not (only_new and key.shop in shops):
            shops[key.shop] = due

    async def unschedule(self, key: TokenKey) -> None:
        self.due.get(key.app, {}).pop(key.shop, None)

    async def due_at(self, key: TokenKey) -> float | None:
        return self.due.get(key.app, {}).get(key.shop)

    async def claim(
        self, app: str, *, limit: int, lease: float, now: float | None = None, per_minute: int = 0
    ) -> list[TokenKey]:
        _check_limit(limit)
        at = time.time() if now is None else now
        tokens = 0.0
        if per_minute > 0:
            left, since = self.budgets.get(app, (float(per_minute), at))
            tokens = min(per_minute, left + max(at - since, 0.0) * per_minute / 60)
            limit = min(limit, int(tokens))
            if limit < 1:
                return []
        shops = self.due.get(app, {})
        ready = heapq.nsmallest(limit, ((due, shop) for shop, due in shops.items() if due <= at))
        for _, shop in ready:
            shops[shop] = at + lease
        if per_minute > 0 and ready:
            self.budgets[app] = (tokens - len(ready), at)
        return [TokenKey(app, shop) for _, shop in ready]

    async def size(self, app: str) -> int:
        return len(self.due.get(app, {}))

    async def members(self, app: str) -> set[str]:
        return set(self.due.get(app, {}))
