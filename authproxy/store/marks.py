"""Expiry-warning marks: which warning went out for which horizon, once across replicas.

One hash per shop, `{prefix}:warned:{app:shop}`: field = the warning (seconds
before the end), value = the horizon it was sent for. `mark` is one Lua
script on that key: it records the warning and answers 1 only to the first
caller for that horizon (horizon.same_horizon: within a day), so of several
replicas noticing the same due warning, exactly one sends it. The key
expires KEEP seconds after its last mark (relative, so no clock but Redis's
own matters; longer than any warning's lead time). A separate key, not a
field of the token record: marking must not bump the record's version,
which the refresh protocol's compare-and-set and waiters watch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as aioredis

from authproxy.horizon import DAY, SAME_HORIZON, same_horizon
from authproxy.models import TokenKey
from authproxy.store.names import shop_key
from authproxy.store.redis import _reachable

KEEP = int(400 * DAY)
# KEYS[1] marks; ARGV[1] warning, ARGV[2] horizon, ARGV[3] same-horizon span, ARGV[4] keep (s) -> 1 first
MARK = """
local sent = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')
if sent and math.abs(sent - tonumber(ARGV[2])) < tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


class WarningMarks(Protocol):
    async def mark(self, key: TokenKey, warning: float, horizon: float) -> bool:
        """Record that `warning` is sent for `horizon`; True only for the first to do so."""

    async def sent(self, key: TokenKey) -> dict[float, float]:
        """Warning -> the horizon it was last sent for."""


class RedisWarningMarks:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    def name(self, key: TokenKey) -> str:
        return shop_key(self.prefix, "warned", key)

    async def mark(self, key: TokenKey, warning: float, horizon: float) -> bool:
        args = (repr(float(warning)), repr(horizon), SAME_HORIZON, KEEP)
        async with _reachable():
            return bool(await self.client.eval(MARK, 1, self.name(key), *args))

    async def sent(self, key: TokenKey) -> dict[float, float]:
        async with _reachable():
            raw = await self.client.hgetall(self.name(key))
        return {float(warning): float(horizon) for warning, horizon in raw.items()}


@dataclass
class MemoryWarningMarks:
    marks: dict[TokenKey, dict[float, float]] = field(default_factory=dict)

    async def mark(self, key: TokenKey, warning: float, horizon: float) -> bool:
        sent, warning = self.marks.setdefault(key, {}), float(warning)
        if warning in sent and same_horizon(sent[warning], horizon):
            return False
        sent[warning] = horizon
        return True

    async def sent(self, key: TokenKey) -> dict[float, float]:
        return dict(self.marks.get(key, {}))
