"""Rate limits the way the platforms enforce them, for the sandboxes.

Each limiter runs on the sandbox's own wall clock (`time.time`, not the token
clock a test may freeze): a token bucket (Amazon, TikTok) and a leaky bucket
(Shoptet). `Arrivals` records every limited call with that clock, so tests
judge the proxy by what the platform saw, not by their own timing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

#: floating-point slack: a call exactly on schedule must not miss its token by 1e-12
EPSILON = 1e-9


@dataclass
class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; a call takes one or is refused."""

    rate: float
    burst: int
    tokens: float = -1.0  # -1: full at first use
    updated: float = 0.0

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens + EPSILON < 1:
            return False
        self.tokens = max(0.0, self.tokens - 1)
        return True

    def has(self, now: float) -> bool:
        self.refill(now)
        return self.tokens + EPSILON >= 1

    def refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.updated) * self.rate)
        self.updated = now

    def change(self, now: float, rate: float, burst: int | None = None) -> None:
        """A new limit from now on (tokens already earned are kept, up to the new burst)."""
        self.refill(now)
        self.rate = rate
        self.burst = burst if burst is not None else self.burst
        self.tokens = min(self.tokens, float(self.burst))


@dataclass
class LeakyBucket:
    """Shoptet's limiter: each call adds a drop, `leak` drops drain per second, `capacity` holds."""

    capacity: int
    leak: float
    level: float = 0.0
    updated: float = 0.0

    def add(self, now: float) -> bool:
        self.drain(now)
        if self.level + 1 > self.capacity + EPSILON:
            return False
        self.level += 1
        return True

    def drain(self, now: float) -> None:
        self.level = max(0.0, self.level - max(0.0, now - self.updated) * self.leak)
        self.updated = now

    def filling(self) -> str:
        """`X-RateLimit-Bucket-Filling`: used/max."""
        return f"{math.ceil(self.level - EPSILON)}/{self.capacity}"

    def free_at(self, now: float) -> float:
        """When a drop fits again, rounded up to the whole second an HTTP-date can say."""
        self.drain(now)
        return math.ceil(now + max(0.0, self.level + 1 - self.capacity) / self.leak)


def http_date(at: float) -> str:
    return formatdate(at, usegmt=True)


@dataclass
class Arrivals:
    """Every limited call a sandbox saw: per key, (time, let through), on its own clock."""

    clock: Callable[[], float] = time.time
    calls: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    #: (when, seconds) the sandbox's own event loop did not run: calls that arrived
    #: meanwhile were stamped late, bunched together (a starved process, not the proxy)
    stalls: list[tuple[float, float]] = field(default_factory=list)

    def note(self, key: str, passed: bool) -> float:
        now = self.clock()
        self.calls.setdefault(key, []).append((now, passed))
        return now

    def refused(self) -> int:
        return sum(1 for calls in self.calls.values() for _, passed in calls if not passed)

    def as_json(self) -> dict[str, Any]:
        calls = {key: [[at, passed] for at, passed in calls] for key, calls in self.calls.items()}
        return {"calls": calls, "stalls": [list(stall) for stall in self.stalls]}

    async def watch(self, tick: float = 0.01, stall: float = 0.1) -> None:
        """Note every time the event loop came back `stall` seconds late or more."""
        last = self.clock()
        while True:
            await asyncio.sleep(tick)
            now = self.clock()
            if now - last - tick >= stall:
                self.stalls.append((last, now - last - tick))
            last = now


def most_in_window(times: list[float], window: float) -> int:
    """The most calls any `window` seconds held (sliding, both ends included)."""
    most, start = 0, 0
    ordered = sorted(times)
    for end, at in enumerate(ordered):
        while ordered[start] < at - window:
            start += 1
        most = max(most, end - start + 1)
    return most
