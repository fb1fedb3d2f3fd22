"""Rate buckets in Redis: one hash per bucket, one Lua script per call.

Keys: `{prefix}:rate:{app:shop}:<operation>` for a shop's bucket and
`{prefix}:rate:{app}:<operation>` for the app's, so a shop's buckets share a
hash tag and every script touches one key (Cluster-safe). Fields: `tat`
(theoretical arrival time, ms), `gen`, learned `rate`/`burst`, `pen` (end of
the latest penalty, ms). The scripts are `gcra.py` in milliseconds with Redis
TIME as the clock, so replicas on hosts with skewed clocks share one time; a
penalty's HTTP-date is compared with the same clock. The last argument may
name the time instead (tests only). Connection trouble is StoreUnavailable.

Turns are asked for in batches: while one script call on a bucket is under
way, the calls that come for that bucket wait and then go together in the
next one, served in the order they came (`_Batches`). A lone call goes at
once; under load one round trip admits many calls. Each script call also
takes spare turns for the calls this process expects within 50 ms, while the
bucket has plenty of room (`spares.py`): calls that find one go without a
round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from authproxy.errors import StoreUnavailable
from authproxy.models import TokenKey
from authproxy.store.gcra import SPARE_FILL, SPARE_SLACK, Grant, Lesson
from authproxy.store.names import app_tag, shop_tag
from authproxy.store.rates import IDLE_TTL, LEARNED_TTL, Ask, BucketView, RateKey
from authproxy.store.redis import _reachable
from authproxy.store.spares import Spares

log = logging.getLogger("authproxy.limits")
#: bucket key names remembered (one per bucket of each shop called; then forgotten at once)
NAMES_MAX = 10_000

PRELUDE = """
local now
if ARGV[#ARGV] ~= '' then
  now = tonumber(ARGV[#ARGV])
else
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
end
local f = redis.call('HMGET', KEYS[1], 'tat', 'gen', 'rate', 'burst', 'pen')
local gen = tonumber(f[2]) or 0
local rate = tonumber(f[3]) or tonumber(ARGV[1])
local burst = tonumber(f[4]) or tonumber(ARGV[2])
local learned = f[3] ~= false or f[4] ~= false
local interval, tau
local function shape()
  interval = 0
  if rate > 0 then interval = 1000 / rate end
  tau = math.max(burst - 1, 0) * interval
end
shape()
local function fmt(x) return string.format('%.3f', x) end
local function level(t)
  if interval > 0 then return (t - now) / interval end
  return 0
end
local function grant(admitted, wait, t, turn)
  local fields = {admitted, fmt(wait), gen, fmt(level(t)), string.format('%.9g', rate), burst, fmt(turn)}
  return table.concat(fields, ' ')
end
"""

# ARGV rate, burst, idle ttl ms, learned ttl ms, spares wanted, then for each call in the batch:
# max wait ms, generation ('' = a new turn); now last -> for each call, in order, "admitted
# wait-ms generation level rate burst turn-ms" (one string: cheaper to parse), then, when spares
# were wanted, "granted <the same fields for the bucket once they are taken>" (gcra.spare, taken
# one by one until one is refused: one summary instead of a reply each, to send and to parse;
# its admitted field means nothing)
ADMIT = (
    PRELUDE
    + """
local tat = math.max(tonumber(f[1]) or now, now)
local taken = false
local out = {}
for i = 6, #ARGV - 1, 2 do
  if ARGV[i + 1] ~= '' and tonumber(ARGV[i + 1]) == gen then
    out[#out + 1] = grant(1, 0, tat, now)
  else
    local send = math.max(now, tat - tau)
    local wait = send - now
    if wait > tonumber(ARGV[i]) + 0.001 then  -- a microsecond: times are kept to it
      out[#out + 1] = grant(0, wait, tat, send)
    else
      if interval > 0 then
        tat = math.max(tat, send) + interval
        taken = true
      end
      out[#out + 1] = grant(1, wait, tat, send)
    end
  end
end
local spares = tonumber(ARGV[5])
if spares > 0 then
  local granted = 0
  while granted < spares and interval > 0 and level(tat + interval) <= burst * SPARE_FILL + SPARE_SLACK do
    tat = tat + interval
    granted = granted + 1
  end
  if granted > 0 then taken = true end
  out[#out + 1] = granted .. ' ' .. grant(1, 0, tat, now)
end
if taken then
  redis.call('HSET', KEYS[1], 'tat', fmt(tat))
  local ttl = tat - now + tonumber(ARGV[3])
  if learned then ttl = math.max(ttl, tonumber(ARGV[4])) end
  redis.call('PEXPIRE', KEYS[1], math.ceil(ttl))
end
return out
""".replace("SPARE_FILL", repr(SPARE_FILL)).replace("SPARE_SLACK", repr(SPARE_SLACK))
)

# ARGV rate, burst, lesson rate, lesson burst, used, penalty at ms, penalty in ms,
# idle ttl ms, learned ttl ms, now ('' = absent) -> ms until the bucket takes a call
LEARN = (
    PRELUDE
    + """
local stored = tonumber(f[1])
local pen = tonumber(f[5]) or 0
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= burst then
  burst = tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'burst', ARGV[4])
  learned = true
end
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= rate then
  local lowered = rate <= 0 or tonumber(ARGV[3]) < rate
  rate = tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'rate', ARGV[3])
  learned = true
  if lowered then
    shape()
    stored = math.max(now + tau + interval, pen + tau)
    gen = gen + 1
  end
end
shape()
if ARGV[5] ~= '' and interval > 0 then
  local filled = now + tonumber(ARGV[5]) * interval
  if not stored or filled > stored then stored = filled end
end
local untl = nil
if ARGV[6] ~= '' then
  untl = tonumber(ARGV[6])
elseif ARGV[7] ~= '' then
  untl = now + tonumber(ARGV[7])
end
if untl and untl > now + 1 and untl > pen + 0.001 then  -- a millisecond or more; pen is stored to the µs
  pen = untl
  redis.call('HSET', KEYS[1], 'pen', fmt(pen))
  stored = untl + tau
  gen = gen + 1
end
if stored then redis.call('HSET', KEYS[1], 'tat', fmt(stored)) end
redis.call('HSET', KEYS[1], 'gen', gen)
local tat = math.max(stored or now, now)
local ttl = math.max(tat, pen) - now + tonumber(ARGV[8])
if learned then ttl = math.max(ttl, tonumber(ARGV[9])) end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl))
return fmt(math.max(0, tat - tau - now))
"""
)

# ARGV rate, generation -> 1 refunded
REFUND = """
local f = redis.call('HMGET', KEYS[1], 'tat', 'gen', 'rate')
if not f[1] or (tonumber(f[2]) or 0) ~= tonumber(ARGV[2]) then return 0 end
local rate = tonumber(f[3]) or tonumber(ARGV[1])
if rate <= 0 then return 0 end
redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', tonumber(f[1]) - 1000 / rate))
return 1
"""


def _ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds * 1000:.3f}"


class RedisRates:
    """Buckets on the token store's Redis client (never a connection of its own)."""

    def __init__(
        self, client: aioredis.Redis, prefix: str, now: float | None = None, *, spare_turns: bool = True
    ) -> None:
        self.client, self.prefix = client, prefix
        self.now = now  # tests: a fixed clock instead of Redis TIME (Unix seconds)
        self._admit = client.register_script(ADMIT)
        self._learn = client.register_script(LEARN)
        self._refund = client.register_script(REFUND)
        self.spares = Spares() if spare_turns else None
        self._batches = _Batches(self._run, self.spares)
        self._names: dict[RateKey, str] = {}

    def name(self, key: RateKey) -> str:
        """The bucket's Redis key (remembered: every shaped call asks it, twice)."""
        found = self._names.get(key)
        if found is None:
            if len(self._names) >= NAMES_MAX:  # one per bucket of every shop called: bounded
                self._names.clear()
            tag = app_tag(key.app) if key.shop is None else shop_tag(TokenKey(key.app, key.shop))
            found = self._names[key] = f"{self.prefix}:rate:{tag}:{key.name}"
        return found

    async def admit(self, asks: Sequence[Ask]) -> list[Grant]:
        if len(asks) == 1:
            return [await self._ask(asks[0])]
        return list(await asyncio.gather(*map(self._ask, asks)))

    def _ask(self, ask: Ask) -> Coroutine[Any, Any, Grant]:
        """The turn of one ask, in its bucket's batch (the batch's coroutine, not one more)."""
        return self._batches.ask((self.name(ask.key), ask.rate, ask.burst), ask)

    async def close(self) -> None:
        await self._batches.close()

    async def _run(self, bucket: BucketCall, asks: Sequence[Ask]) -> list[Grant]:
        """A turn for each ask of one bucket, in order; the spares it takes are kept."""
        if self.spares is None:
            return await self.turns(bucket, asks)
        name = bucket[0]
        order = self.spares.order(name)
        grants = await self.turns(bucket, asks, spares=order.count)
        self.spares.keep(name, order, grants[len(asks) :])
        return grants[: len(asks)]

    async def turns(self, bucket: BucketCall, asks: Sequence[Ask], spares: int = 0) -> list[Grant]:
        """One script call: a turn for each ask of one bucket, in order, then `spares` spare
        turns (gcra.spare: each granted or refused)."""
        name, rate, burst = bucket
        args: list[str | float] = [rate, burst, _ms(IDLE_TTL), _ms(LEARNED_TTL), spares]
        for ask in asks:
            args += [_ms(ask.max_wait), "" if ask.generation is None else str(ask.generation)]
        args.append(_ms(self.now))
        async with _reachable():
            replies = await self._admit(keys=[name], args=args)
        grants = [_grant(reply) for reply in replies[: len(asks)]]
        return grants + _spares(replies[-1], spares) if spares else grants

    async def learn(self, key: RateKey, rate: float, burst: int, lesson: Lesson) -> float:
        name = self.name(key)
        if self.spares is None:
            return await self._learned(name, rate, burst, lesson)
        self.spares.drop(name)  # held ones, now; and once it is stored, those of script calls
        try:  # sent meanwhile, which the store may have run before the lesson
            return await self._learned(name, rate, burst, lesson)
        finally:
            self.spares.drop(name)

    async def _learned(self, name: str, rate: float, burst: int, lesson: Lesson) -> float:
        args: list[str | float] = [
            rate,
            burst,
            "" if lesson.rate is None else repr(lesson.rate),
            "" if lesson.burst is None else str(lesson.burst),
            "" if lesson.used is None else str(lesson.used),
            _ms(lesson.penalty_at),
            _ms(lesson.penalty_in),
            _ms(IDLE_TTL),
            _ms(LEARNED_TTL),
            _ms(self.now),
        ]
        async with _reachable():
            wait = await self._learn(keys=[name], args=args)
        return float(wait) / 1000

    async def refund(self, key: RateKey, rate: float, generation: int) -> None:
        async with _reachable():
            await self._refund(keys=[self.name(key)], args=[rate, generation])

    async def buckets(self, app: str, shop: str | None) -> list[BucketView]:
        patterns = [f"{self.prefix}:rate:{{{app}:{shop}}}:*"]
        if shop is None:
            patterns = [f"{self.prefix}:rate:{{{app}}}:*", f"{self.prefix}:rate:{{{app}:*"]
        found: list[BucketView] = []
        async with _reachable():
            seconds, micros = await self.client.time()
            now = self.now if self.now is not None else seconds + micros / 1e6
            for pattern in patterns:
                async for raw in self.client.scan_iter(match=pattern, count=500):
                    fields = await self.client.hgetall(raw)
                    found.append(_view(self._key(raw.decode()), fields, now))
        return sorted(found, key=lambda v: (v.key.shop or "", v.key.name))

    def _key(self, name: str) -> RateKey:
        tag, _, operation = name[len(self.prefix) + len(":rate:{") :].partition("}:")
        app, _, shop = tag.partition(":")
        return RateKey(app, shop or None, operation)


#: a bucket as one script call names it: its key, and the default rate and burst
BucketCall = tuple[str, float, int]
Turn = tuple[Ask, asyncio.Future[Grant]]


class _Batches:
    """One script call per bucket at a time; the asks that come meanwhile go in the next.
    A call the store failed fails the asks that waited for it too: they would only wait
    out the same timeout again."""

    def __init__(
        self, run: Callable[[BucketCall, Sequence[Ask]], Awaitable[list[Grant]]], spares: Spares | None
    ) -> None:
        self.run = run
        self.spares = spares  # None: every new turn is asked of the store
        self._waiting: dict[BucketCall, list[Turn]] = {}  # a call is under way for each bucket here
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False

    async def ask(self, bucket: BucketCall, ask: Ask) -> Grant:
        waiting = self._waiting.get(bucket)
        if self.spares is not None and ask.generation is None:
            self.spares.asked(bucket[0])
            # callers queued before this one get the spares first (_next hands them out)
            if not waiting and (spare := self.spares.take(bucket[0])) is not None:
                return spare
        if waiting is not None:
            turn: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
            waiting.append((ask, turn))
            return await turn
        self._waiting[bucket] = []
        failure: StoreUnavailable | None = None
        try:
            return (await self.run(bucket, [ask]))[0]
        except StoreUnavailable as exc:
            failure = exc
            raise
        finally:
            self._next(bucket, failure)

    def _next(self, bucket: BucketCall, failure: StoreUnavailable | None) -> None:
        """The call on `bucket` is done: send what waited for it (callers gone left out),
        or fail it with the same failure."""
        waiting = [(ask, turn) for ask, turn in self._waiting.pop(bucket) if not turn.done()]
        if failure is None and self.spares is not None:
            waiting = [(ask, turn) for ask, turn in waiting if not self._spared(bucket, ask, turn)]
        if failure is not None or self._closed:
            _fail(waiting, failure or StoreUnavailable("the rate buckets are closed"))
        elif waiting:
            self._waiting[bucket] = []
            flush = asyncio.create_task(self._flush(bucket, waiting))
            self._flushes.add(flush)
            flush.add_done_callback(lambda task: self._flushed(bucket, waiting, task))

    def _spared(self, bucket: BucketCall, ask: Ask, turn: asyncio.Future[Grant]) -> bool:
        """Serve a waiting new turn with a spare the finished call took, if there is one."""
        assert self.spares is not None
        spare = self.spares.take(bucket[0]) if ask.generation is None else None
        if spare is not None:
            turn.set_result(spare)
        return spare is not None

    async def _flush(self, bucket: BucketCall, waiting: list[Turn]) -> None:
        grants = await self.run(bucket, [ask for ask, _ in waiting])
        for (_, turn), grant in zip(waiting, grants, strict=True):
            if not turn.done():
                turn.set_result(grant)

    def _flushed(self, bucket: BucketCall, waiting: list[Turn], flush: asyncio.Task[None]) -> None:
        """Whatever became of the flush (cancelled even before it ran): no caller is left
        waiting, and the bucket's next call goes."""
        self._flushes.discard(flush)
        failure = None if flush.cancelled() else flush.exception()
        if failure is not None and not isinstance(failure, StoreUnavailable):
            log.error("a batch of rate-limit turns failed: %s", type(failure).__name__)
        unavailable = failure if isinstance(failure, StoreUnavailable) else None
        _fail(waiting, unavailable or StoreUnavailable("the rate buckets did not answer"))
        self._next(bucket, unavailable)

    async def close(self) -> None:
        self._closed = True
        for flush in list(self._flushes):
            flush.cancel()
        await asyncio.gather(*self._flushes, return_exceptions=True)


def _fail(waiting: list[Turn], failure: StoreUnavailable) -> None:
    """Each caller gets its own exception (one object raised in many tasks grows its traceback)."""
    for _, turn in waiting:
        if not turn.done():
            turn.set_exception(StoreUnavailable(failure.detail))


def _grant(reply: bytes) -> Grant:
    admitted, wait, gen, level, rate, burst, turn = reply.split()
    return Grant(
        admitted == b"1",
        float(wait) / 1000,
        int(gen),
        float(level),
        float(rate),
        int(burst),
        float(turn) / 1000,
    )


def _spares(summary: bytes, wanted: int) -> list[Grant]:
    """The spare turns of a script call's summary ("granted, then the bucket once they were
    taken"), as gcra.spare grants them one by one: each granted one a call fuller than the one
    before, the last as full as the bucket; then the refused ones, which leave it so."""
    count, _, after = summary.partition(b" ")
    granted, bucket = int(count), _grant(after)
    generation, level, rate, burst, at = bucket.generation, bucket.level, bucket.rate, bucket.burst, bucket.at
    taken = [Grant(True, 0.0, generation, level - n, rate, burst, at) for n in range(granted - 1, -1, -1)]
    return taken + [Grant(False, 0.0, generation, level, rate, burst, at)] * (wanted - granted)


def _view(key: RateKey, fields: Mapping[Any, Any], now: float) -> BucketView:
    def seconds_left(name: bytes) -> float:
        raw = fields.get(name)
        return max(0.0, float(raw) / 1000 - now) if raw else 0.0

    rate, burst = fields.get(b"rate"), fields.get(b"burst")
    return BucketView(
        key=key,
        rate=float(rate) if rate else None,
        burst=int(burst) if burst else None,
        empty_in=seconds_left(b"tat"),
        penalty_in=seconds_left(b"pen"),
        generation=int(fields.get(b"gen") or 0),
    )
