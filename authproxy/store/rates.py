"""Rate buckets shared by every replica: the store side of rate limiting.

A bucket is named by (app, shop or None for the app's own, operation) and
holds GCRA state (`gcra.py`). `RedisRates` keeps it in Redis, one hash per
bucket, changed by one Lua script per call with Redis TIME as the clock;
`MemoryRates` keeps it in this process (memory:// stores: the demo, tests, a
lone sidecar). Neither grows the TokenStore protocol: `open_rates` (store/)
builds the one that matches a token store, reusing its Redis client and prefix.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from authproxy.store.gcra import BucketState, Grant, Lesson, admit, learn, refund

#: an untouched bucket without learned values is forgotten this long after it emptied
IDLE_TTL = 60.0
#: a learned rate or burst is kept this long after the bucket's last use
LEARNED_TTL = 86400.0


class RateKey(NamedTuple):  # NamedTuples: made for every call (see models.OutgoingRequest)
    app: str
    shop: str | None  # None: the app's bucket, shared by all its shops
    name: str  # the operation (or [[limits]] rule) it counts


class Ask(NamedTuple):
    """One bucket's part of an admission: its key, default limit, and how long the call may wait.
    `generation` set: confirm a turn taken earlier (re-queue only if the queue was dropped)."""

    key: RateKey
    rate: float
    burst: int
    max_wait: float
    generation: int | None = None


@dataclass(frozen=True)
class BucketView:
    """A bucket for `authproxy limits show`."""

    key: RateKey
    rate: float | None  # learned (None: the default applies)
    burst: int | None
    empty_in: float  # seconds until every turn handed out is used (0: empty)
    penalty_in: float  # seconds the latest penalty still holds (0: none)
    generation: int


class RateStore(Protocol):
    async def admit(self, asks: Sequence[Ask]) -> list[Grant]:
        """Ask every bucket at once (one round trip); each grants or refuses on its own."""

    async def learn(self, key: RateKey, rate: float, burst: int, lesson: Lesson) -> float:
        """Teach a bucket; returns the seconds until it takes a call."""

    async def refund(self, key: RateKey, rate: float, generation: int) -> None: ...

    async def buckets(self, app: str, shop: str | None) -> list[BucketView]:
        """The stored buckets of an app (shop None: the app's own and every shop's)."""

    async def close(self) -> None:
        """Stop what is under way (at shutdown, before the store closes)."""


class MemoryRates:
    """Buckets in this process, on the wall clock (a penalty's HTTP-date is wall-clock time)."""

    def __init__(self) -> None:
        self.states: dict[RateKey, BucketState] = {}
        self._since_sweep = 0

    async def close(self) -> None:
        return None

    async def admit(self, asks: Sequence[Ask]) -> list[Grant]:
        now = time.time()
        self._sweep(now)
        states = [self.states.setdefault(ask.key, BucketState()) for ask in asks]
        return [
            admit(state, now, ask.rate, ask.burst, ask.max_wait, ask.generation)
            for state, ask in zip(states, asks, strict=True)
        ]

    async def learn(self, key: RateKey, rate: float, burst: int, lesson: Lesson) -> float:
        return learn(self.states.setdefault(key, BucketState()), time.time(), lesson, rate, burst)

    async def refund(self, key: RateKey, rate: float, generation: int) -> None:
        state = self.states.get(key)
        if state is not None:
            refund(state, rate, generation)

    async def buckets(self, app: str, shop: str | None) -> list[BucketView]:
        now = time.time()
        found = [
            view(key, state, now)
            for key, state in self.states.items()
            if key.app == app and (shop is None or key.shop == shop)
        ]
        return sorted(found, key=lambda v: (v.key.shop or "", v.key.name))

    def _sweep(self, now: float) -> None:
        """Forget idle buckets now and then, as Redis expires them."""
        self._since_sweep += 1
        if self._since_sweep < 1024:
            return
        self._since_sweep = 0
        for key, state in list(self.states.items()):
            learned = state.rate is not None or state.burst is not None
            if not learned and (state.tat or 0.0) + IDLE_TTL < now:
                del self.states[key]


def view(key: RateKey, state: BucketState, now: float) -> BucketView:
    return BucketView(
        key=key,
        rate=state.rate,
        burst=state.burst,
        empty_in=max(0.0, (state.tat or now) - now),
        penalty_in=max(0.0, state.penalty - now),
        generation=state.generation,
    )
