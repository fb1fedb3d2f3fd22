"""GCRA with reservations (pure): the algorithm of every rate bucket.

A bucket of `rate` calls per second with bursts of `burst` is one number, the
theoretical arrival time `tat`: the bucket is empty when `tat <= now` and
holds `(tat - now) * rate` calls otherwise. A call may go at
`send = max(now, tat - (burst - 1) / rate)`; taking it moves `tat` on by one
interval. A call that would have to wait longer than it may is refused and
changes nothing. Taking a turn in the future (a reservation) is what makes the
order fair: callers are served in the order they asked, across replicas.

What the platform tells us rewrites the bucket:
- a lower rate (Amazon's `x-amzn-RateLimit-Limit`): the bucket counts as full,
  so calls go one interval apart from now on;
- the platform's filling (Shoptet): `tat` moves up to it, never back;
- a penalty until T (a 429): the bucket is full at T, so the first call goes at T.
A lower rate and a penalty drop the reservations already handed out and bump
the `generation`: a caller that was told to wait checks the generation before
it sends, and queues again if it changed.

A process may also take a *spare* turn ahead of any call (`spare`), to hand
to a call of its own soon after without asking the store (`spares.py`): only
while the bucket stays at most SPARE_FILL full, so spares are never taken
from a bucket that calls queue for.

`rate` 0 means no limit of its own: only a penalty holds calls back.
The Lua script in `redis_rates.py` is this, line for line, in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass
class BucketState:
    """One bucket as a store keeps it (times in Unix seconds)."""

    tat: float | None = None
    generation: int = 0
    rate: float | None = None  # learned: replaces the default
    burst: int | None = None  # learned: replaces the default
    penalty: float = 0.0  # end of the latest penalty


class Grant(NamedTuple):
    """A bucket's answer: admitted (go after `wait` s) or refused (would wait `wait` s).
    (A NamedTuple, as the other values every call makes: see models.OutgoingRequest.)"""

    admitted: bool
    wait: float
    generation: int
    level: float  # calls in the bucket once this one is counted
    rate: float  # the rate in force (learned or default)
    burst: int
    at: float = 0.0  # the turn: the store's clock (Unix seconds) plus `wait`


@dataclass(frozen=True)
class Lesson:
    """What a reply taught about a bucket."""

    rate: float | None = None
    burst: int | None = None
    used: int | None = None  # calls the platform's bucket holds now
    penalty_at: float | None = None  # Unix time
    penalty_in: float | None = None  # seconds from now

    def __bool__(self) -> bool:
        return any(v is not None for v in vars(self).values())


def shape(rate: float, burst: int) -> tuple[float, float]:
    """(interval between calls, how far ahead `tat` may be while a call still goes now)."""
    interval = 1.0 / rate if rate > 0 else 0.0
    return interval, max(burst - 1, 0) * interval


def admit(
    state: BucketState, now: float, rate: float, burst: int, max_wait: float, generation: int | None = None
) -> Grant:
    """Take a turn (or, with `generation`, confirm one taken before if nothing was dropped since)."""
    rate = state.rate if state.rate is not None else rate
    burst = state.burst if state.burst is not None else burst
    interval, tau = shape(rate, burst)
    tat = max(state.tat if state.tat is not None else now, now)
    if generation is not None and generation == state.generation:
        return Grant(True, 0.0, state.generation, _level(tat, now, interval), rate, burst, now)
    send = max(now, tat - tau)
    wait = send - now
    if wait > max_wait + 1e-6:  # times are kept to the microsecond
        return Grant(False, wait, state.generation, _level(tat, now, interval), rate, burst, send)
    if interval > 0:
        tat = max(tat, send) + interval
        state.tat = tat
    return Grant(True, wait, state.generation, _level(tat, now, interval), rate, burst, send)


#: a spare turn is taken only while the bucket, once it is counted, is at most this full (of burst)
SPARE_FILL = 0.5
#: slack of that comparison in calls: the store keeps times to the microsecond
SPARE_SLACK = 1e-3


def spare(state: BucketState, now: float, rate: float, burst: int) -> Grant:
    """Take a turn that goes now, ahead of any call, if the bucket stays at most SPARE_FILL
    full with it (then it goes now, too); else refused, nothing changed."""
    rate = state.rate if state.rate is not None else rate
    burst = state.burst if state.burst is not None else burst
    interval, _ = shape(rate, burst)
    tat = max(state.tat if state.tat is not None else now, now)
    if interval <= 0 or _level(tat + interval, now, interval) > burst * SPARE_FILL + SPARE_SLACK:
        return Grant(False, 0.0, state.generation, _level(tat, now, interval), rate, burst, now)
    state.tat = tat + interval
    return Grant(True, 0.0, state.generation, _level(state.tat, now, interval), rate, burst, now)


def learn(state: BucketState, now: float, lesson: Lesson, rate: float, burst: int) -> float:
    """Apply a lesson; returns how long until the bucket takes a call."""
    rate = state.rate if state.rate is not None else rate
    burst = state.burst if state.burst is not None else burst
    if lesson.burst is not None and lesson.burst != burst:
        state.burst = burst = lesson.burst
    if lesson.rate is not None and lesson.rate != rate:
        lowered = rate <= 0 or lesson.rate < rate
        state.rate = rate = lesson.rate
        if lowered:
            interval, tau = shape(rate, burst)
            state.tat = max(now + tau + interval, state.penalty + tau)  # full now, and a penalty holds
            state.generation += 1
    interval, tau = shape(rate, burst)
    if lesson.used is not None and interval > 0:
        filled = now + lesson.used * interval
        if state.tat is None or filled > state.tat:
            state.tat = filled
    until = lesson.penalty_at if lesson.penalty_at is not None else None
    if until is None and lesson.penalty_in is not None:
        until = now + lesson.penalty_in
    if until is not None and until > now + 1e-3 and until > state.penalty + 1e-6:  # not again, not < 1 ms
        state.penalty = until
        state.tat = until + tau
        state.generation += 1
    tat = max(state.tat if state.tat is not None else now, now)
    return max(0.0, tat - tau - now)


def refund(state: BucketState, rate: float, generation: int) -> None:
    """Give back a turn taken but not used (unless the queue was dropped since)."""
    rate = state.rate if state.rate is not None else rate
    if state.generation == generation and state.tat is not None and rate > 0:
        state.tat -= 1.0 / rate


def _level(tat: float, now: float, interval: float) -> float:
    return (tat - now) / interval if interval > 0 else 0.0
