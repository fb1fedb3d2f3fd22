"""Rate limiting on the request path: one turn before each upstream send, one lesson after.

The proxy flow calls four things, and nothing else of rate limiting:

- `ticket(headers)`, once per client request: how long its calls may wait for
  their turn (`server.max_queue_wait`, lowered by `X-AuthProxy-Max-Wait`);
- `admit(key, platform, request, ticket)` before each upstream send: waits
  for the call's turn in its buckets, or raises RateLimited (nothing is sent).
  A call under its limits costs one store round trip; a call that had to wait
  confirms its turn once more before it goes (a penalty or a lower rate learned
  meanwhile by any replica sends it back into the queue, and so does waking up
  much later than its turn, as a stalled process does: sent at once, such calls
  would reach the platform bunched together);
- `learn(admission, platform, reply)` once the reply's head is read: the
  platform's announced rate, its bucket's filling, a penalty for a throttled
  reply; written to the store only when it tells something new;
- `retry(outcome, ticket, replayable)`: whether a throttled reply gets its one
  more try.

If the store cannot be reached, calls go unshaped (a 429 now and then beats
failing every call) and a throttled reply still makes its retry wait. An
outage costs one store timeout, not one per call: once the store failed to
answer, calls skip it until a probe (one call's own ask, in the background)
finds it back (`Reachability`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from authproxy.errors import BadHeader, RateLimited, StoreUnavailable
from authproxy.limits.rules import Bucket, buckets_for, lesson, max_wait, retry_after, rules_of, should_retry
from authproxy.metrics import Metrics
from authproxy.models import NOT_THROTTLED, HttpReply, Operation, OutgoingRequest, Scope, Throttle, TokenKey
from authproxy.platforms import Platform
from authproxy.settings import Settings
from authproxy.store.gcra import Grant
from authproxy.store.rates import Ask, RateKey, RateStore
from authproxy.store.reachability import Reachability

log = logging.getLogger("authproxy.limits")
MAX_WAIT_HEADER = "X-AuthProxy-Max-Wait"
WARN_EVERY = 30.0
#: a turn taken this much later than its time (a stalled process) is taken anew
LATE_WAKE = 0.05
#: a call without a quota of its own asks the store about a penalty at most this often
PENALTY_POLL = 0.1
#: most buckets remembered as free of penalties (a bound on this process's memory)
CLEAR_MAX = 10_000
#: most operations whose buckets are remembered
BUCKETS_MAX = 4096
_admitted, _wait = operator.attrgetter("admitted"), operator.attrgetter("wait")  # of a Grant


@dataclass
class Ticket:
    """One client request's allowance: its calls may wait `allowed` seconds, until
    `deadline` (time.monotonic()); a throttled call's one retry gets a fresh allowance."""

    allowed: float
    deadline: float
    retried: bool = False
    not_before: float = 0.0  # a throttled reply's rest, kept here too in case the store is down
    waited: float = 0.0


class Admission(NamedTuple):
    """The buckets one upstream call counted against, and what they said (None: unshaped)."""

    key: TokenKey
    buckets: tuple[Bucket, ...]
    grants: tuple[Grant, ...] | None


@dataclass(frozen=True)
class Outcome:
    """What a reply said about the limits; `wait`: seconds until its bucket takes a call."""

    throttle: Throttle
    wait: float = 0.0

    @property
    def retry_after(self) -> int | None:
        """The Retry-After (seconds) a throttled reply passed to the client carries."""
        return retry_after(self.wait) if self.throttle.throttled else None


UNSHAPED = Outcome(NOT_THROTTLED)


class Shaper:
    def __init__(self, rates: RateStore, settings: Settings, metrics: Metrics) -> None:
        self.rates = rates
        self.enabled = settings.server.rate_limits
        self.max_wait = settings.server.max_queue_wait
        self.rules = {name: rules_of(app.limits) for name, app in settings.apps.items()}
        self.metrics = metrics
        self._warned_at = -WARN_EVERY
        #: buckets without a rate of their own, known free of penalties until (monotonic time)
        self._clear: dict[RateKey, float] = {}
        self._bucket_memo: dict[tuple[object, ...], tuple[Bucket, ...]] = {}
        #: buckets a call is asking the store about now: whether it found them free of penalties
        self._asking: dict[RateKey, asyncio.Future[bool]] = {}
        self.reachability = Reachability("rate buckets")

    async def close(self) -> None:
        await self.reachability.close()
        await self.rates.close()

    def ticket(self, headers: Mapping[str, str]) -> Ticket:
        try:
            allowed = max_wait(headers.get(MAX_WAIT_HEADER), self.max_wait)
        except ValueError:
            raise BadHeader(f"{MAX_WAIT_HEADER} must be a number of seconds (>= 0)") from None
        return Ticket(allowed, time.monotonic() + allowed)

    async def admit(
        self, key: TokenKey, platform: Platform, request: OutgoingRequest, ticket: Ticket
    ) -> Admission:
        if not self.enabled:
            return Admission(key, (), None)
        buckets = self._buckets(key.app, platform.operation(request.method, request.path), request)
        started = time.monotonic()
        if len(buckets) != 1 or buckets[0].rate > 0:
            return await self._turn(key, buckets, ticket, started)
        return await self._penalty_checked(key, buckets, ticket, started)

    async def _penalty_checked(
        self, key: TokenKey, buckets: tuple[Bucket, ...], ticket: Ticket, started: float
    ) -> Admission:
        """A lone bucket without a rate of its own: only a penalty can hold the call back.
        Found free of one moments ago: no store round trip (a penalty set meanwhile is seen
        within PENALTY_POLL). While one call asks the store, the calls that come meanwhile
        take its answer instead of asking too (else every call in flight would ask at once)."""
        rate_key = _rate_key(key, buckets[0])
        if self._clear.get(rate_key, 0.0) > started:
            return Admission(key, buckets, None)
        asking = self._asking.get(rate_key)
        if asking is not None:
            if await asyncio.shield(asking):  # the call that asked found no penalty
                return Admission(key, buckets, None)
            return await self._turn(key, buckets, ticket, started)
        asking = self._asking[rate_key] = asyncio.get_running_loop().create_future()
        try:
            return await self._turn(key, buckets, ticket, started)
        finally:
            del self._asking[rate_key]
            asking.set_result(self._clear.get(rate_key, 0.0) > started)

    async def _turn(
        self, key: TokenKey, buckets: tuple[Bucket, ...], ticket: Ticket, started: float
    ) -> Admission:
        """Wait for the call's turn in its buckets (the store decides), or raise RateLimited."""
        generations: Sequence[int] | None = None  # the turns to confirm (None: new ones)
        waited = 0.0
        while True:
            asks = _asks(key, buckets, max(0.0, ticket.deadline - time.monotonic()), generations)
            if self.reachability.down:
                # a probe takes a turn only if one is free now (the call goes now, unshaped)
                probes = [ask._replace(max_wait=0.0) for ask in asks]
                self.reachability.probe(functools.partial(self.rates.admit, probes))
                return await self._unshaped(key, buckets, ticket)
            try:
                grants = await self.rates.admit(asks)
            except StoreUnavailable:
                self.reachability.failed()
                self._warn(f"rate buckets of {key} unavailable (store unreachable): calls go unshaped")
                return await self._unshaped(key, buckets, ticket)
            if not all(map(_admitted, grants)):
                await self._refund(key, buckets, grants)
                raise self._rejected(key, buckets, grants)
            wait = max(map(_wait, grants))
            if wait <= 0:
                break
            due = time.monotonic() + wait
            await asyncio.sleep(wait)
            woke = time.monotonic()
            waited = woke - started
            # woke too late: sent now it would bunch up, so it queues again
            generations = [grant.generation for grant in grants] if woke - due <= _slack(grants) else None
        ticket.waited += waited
        self.metrics.rate_wait(key.app, buckets[0].label, waited)
        if not waited and len(buckets) == 1 and buckets[0].rate <= 0:
            self._remember_clear(_rate_key(key, buckets[0]), time.monotonic())
        return Admission(key, buckets, tuple(grants))

    async def _unshaped(self, key: TokenKey, buckets: tuple[Bucket, ...], ticket: Ticket) -> Admission:
        """Sent without a turn (the store is unreachable); a throttled call's rest still holds."""
        await asyncio.sleep(max(0.0, ticket.not_before - time.monotonic()))
        return Admission(key, buckets, None)

    def _buckets(self, app: str, operation: Operation, request: OutgoingRequest) -> tuple[Bucket, ...]:
        """buckets_for, remembered per operation (and per call when the app has rules)."""
        rules = self.rules.get(app, ())
        memo = (app, operation, request.method, request.path) if rules else (app, operation)
        found = self._bucket_memo.get(memo)
        if found is None:
            if len(self._bucket_memo) >= BUCKETS_MAX:  # operations may name paths: bounded
                self._bucket_memo.clear()
            found = buckets_for(operation, request.method, request.path, rules)
            self._bucket_memo[memo] = found
        return found

    def _remember_clear(self, key: RateKey, now: float) -> None:
        if len(self._clear) >= CLEAR_MAX:
            self._clear = {k: until for k, until in self._clear.items() if until > now}
            if len(self._clear) >= CLEAR_MAX:
                return
        self._clear[key] = now + PENALTY_POLL

    async def learn(self, admission: Admission, platform: Platform, reply: HttpReply) -> Outcome:
        if not admission.buckets:
            return UNSHAPED
        throttle = platform.throttle(reply)
        if throttle is NOT_THROTTLED or throttle == NOT_THROTTLED:  # the constant, mostly
            return UNSHAPED
        key, bucket = admission.key, admission.buckets[0]  # the shop's when there is one
        grant = admission.grants[0] if admission.grants else None
        taught = lesson(throttle, bucket, grant, platform.throttle_penalty)
        wait = _local_wait(taught.penalty_at, taught.penalty_in)
        if taught:
            self._clear.pop(_rate_key(key, bucket), None)
        if taught and not self.reachability.down:
            try:
                wait = await self.rates.learn(_rate_key(key, bucket), bucket.rate, bucket.burst, taught)
            except StoreUnavailable:
                self.reachability.failed()
                self._warn(f"could not record what {key}'s reply said about its limits (store unreachable)")
        if taught.rate is not None and throttle.rate is not None:
            self.metrics.learned_rate(key.app, bucket.label, throttle.rate)
        if throttle.throttled:
            self.metrics.upstream_throttled(key.app)
            log.info(
                "%s: the platform throttled a call of %s (HTTP %s); its %s bucket rests %.1fs",
                key,
                bucket.label,
                reply.status,
                bucket.scope,
                wait,
            )
        return Outcome(throttle, wait)

    def retry(self, outcome: Outcome, ticket: Ticket, replayable: bool) -> bool:
        """Whether to send a throttled call once more (and note that it was)."""
        if not outcome.throttle.throttled:
            return False
        again = should_retry(
            outcome.throttle,
            wait=outcome.wait,
            budget=ticket.allowed,
            replayable=replayable,
            retried=ticket.retried,
        )
        if again:
            now = time.monotonic()
            ticket.retried = True
            ticket.deadline = now + ticket.allowed
            ticket.not_before = now + outcome.wait
        return again

    async def _refund(self, key: TokenKey, buckets: Sequence[Bucket], grants: Sequence[Grant]) -> None:
        for bucket, grant in zip(buckets, grants, strict=True):
            if grant.admitted and bucket.rate > 0:
                try:
                    await self.rates.refund(_rate_key(key, bucket), bucket.rate, grant.generation)
                except StoreUnavailable:
                    self.reachability.failed()
                    return

    def _rejected(self, key: TokenKey, buckets: Sequence[Bucket], grants: Sequence[Grant]) -> RateLimited:
        refusals = [(g.wait, b) for b, g in zip(buckets, grants, strict=True) if not g.admitted]
        wait, bucket = max(refusals, key=lambda refusal: refusal[0])  # the first of equal waits
        self.metrics.rejected(key.app, bucket.scope)
        whose = f"{key}'s" if bucket.scope is Scope.SHOP else f"app {key.app}'s"
        return RateLimited(
            f"{whose} rate limit for {bucket.label} has no turn for {wait:.1f}s, "
            "longer than this request may wait",
            retry_after=retry_after(wait),
            scope=str(bucket.scope),
        )

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(message)


def _rate_key(key: TokenKey, bucket: Bucket) -> RateKey:
    return RateKey(key.app, key.shop if bucket.scope is Scope.SHOP else None, bucket.name)


def _asks(
    key: TokenKey, buckets: Sequence[Bucket], left: float, generations: Sequence[int] | None
) -> list[Ask]:
    """What to ask of each bucket: a new turn, or confirm the one of this generation."""
    if generations is None:
        return [Ask(_rate_key(key, bucket), bucket.rate, bucket.burst, left) for bucket in buckets]
    return [
        Ask(_rate_key(key, bucket), bucket.rate, bucket.burst, left, generation)
        for bucket, generation in zip(buckets, generations, strict=True)
    ]


def _slack(grants: Sequence[Grant]) -> float:
    """How late a turn may be taken before it is stale: as long as the calls due meanwhile
    fit in a burst (which the platform takes at once), at least LATE_WAKE."""
    spans = [grant.burst / grant.rate for grant in grants if grant.rate > 0]
    return max(LATE_WAKE, min(spans)) if spans else LATE_WAKE


def _local_wait(at: float | None, after: float | None) -> float:
    if at is not None:
        return max(0.0, at - time.time())
    return after or 0.0
