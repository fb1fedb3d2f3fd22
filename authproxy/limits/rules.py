"""Which buckets a call counts against, and the decisions around them (pure).

A call counts against at most one bucket per scope: the shop's (shared by
that shop's calls on every replica) and the app's (shared by all its shops).
For each scope the first `[[apps.X.limits]]` rule that matches wins; else the
platform's default quota for the operation. A call with no quota at all still
has a shop bucket without a rate of its own, so a platform's 429 can hold the
shop back (the penalty box).

Published limits are exact and the way to a platform jitters, so shaping keeps
a little headroom: one call of the burst, or (burst 1) a tenth of the rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from authproxy.models import Operation, Quota, Scope, Throttle
from authproxy.settings import LIMIT_MATCH, LimitSettings
from authproxy.store.gcra import Grant, Lesson

#: a Shoptet-style capacity keeps this share free for the shop's other API users
CAPACITY_MARGIN = 0.1
#: a limit of burst 1 is shaped this much slower: calls exactly one interval apart are
#: refused by a strict token bucket as soon as the network delays one more than the next
RATE_MARGIN = 0.1
#: a rate the platform announces is kept this much lower, for the same reason
LEARNED_MARGIN = 0.05
#: the platform's filling must exceed our count by this share of its capacity to be taken
FILLING_SLACK = 0.05


@dataclass(frozen=True)
class Bucket:
    scope: Scope
    name: str  # the operation or the rule's match: one bucket per name and scope
    label: str  # bounded name for metrics
    rate: float  # 0: no quota of its own (only a penalty holds calls back)
    burst: int


@dataclass(frozen=True)
class Rule:
    """An `[[apps.X.limits]]` entry, ready to match."""

    method: str | None
    glob: str
    quota: Quota
    text: str

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        return self.glob == "*" or fnmatchcase(path, self.glob)


def rule_of(limit: LimitSettings) -> Rule:
    parsed = LIMIT_MATCH.match(limit.match)
    if parsed is None:  # settings validated it
        raise ValueError(f"bad limit match {limit.match!r}")
    method = parsed.group("method")
    burst = limit.burst if limit.burst is not None else max(1, math.ceil(limit.rate))
    quota = Quota(limit.rate, burst, Scope(limit.scope))
    return Rule(None if method in (None, "*") else method, parsed.group("path"), quota, limit.match)


def rules_of(limits: Sequence[LimitSettings]) -> tuple[Rule, ...]:
    return tuple(rule_of(limit) for limit in limits)


def buckets_for(operation: Operation, method: str, path: str, rules: Sequence[Rule]) -> tuple[Bucket, ...]:
    """The shop's bucket first (when there is one), then the app's."""
    chosen: dict[Scope, Bucket] = {}
    for rule in rules:
        scope = rule.quota.scope
        if scope not in chosen and rule.matches(method, path):
            chosen[scope] = Bucket(scope, rule.text, rule.text, *headroom(rule.quota))
    for quota in operation.quotas:
        if quota.scope not in chosen:
            chosen[quota.scope] = Bucket(quota.scope, operation.name, operation.label, *headroom(quota))
    if not chosen:
        chosen[Scope.SHOP] = Bucket(Scope.SHOP, operation.name, operation.label, 0.0, 1)
    return tuple(chosen[scope] for scope in (Scope.SHOP, Scope.APP) if scope in chosen)


def headroom(quota: Quota) -> tuple[float, int]:
    """The (rate, burst) to shape to for a limit: one call of the burst kept back, or a
    tenth of the rate when the burst is 1."""
    if quota.burst >= 2:
        return quota.rate, quota.burst - 1
    return quota.rate * (1 - RATE_MARGIN), 1


def max_wait(header: str | None, server_max: float) -> float:
    """The longest a call may wait for its turn: the server's, or less when the client asks.

    Raises ValueError for a value that is not a non-negative number of seconds."""
    if header is None:
        return server_max
    asked = float(header.strip())
    if not math.isfinite(asked) or asked < 0:
        raise ValueError(header)
    return min(asked, server_max)


def retry_after(wait: float) -> int:
    """Whole seconds for a Retry-After header: never 0 (that would invite a busy loop)."""
    return max(1, math.ceil(round(wait, 3)))


def capacity_burst(capacity: int) -> int:
    """The burst to use for a platform bucket of `capacity` calls."""
    return max(1, capacity - max(1, math.ceil(capacity * CAPACITY_MARGIN)))


def lesson(throttle: Throttle, bucket: Bucket, grant: Grant | None, penalty: float) -> Lesson:
    """What a reply teaches the bucket that counted the call (empty: nothing new).

    `grant` is the bucket's state when the call was admitted (None: unknown).
    Only a shop's bucket takes rates and fillings. An announced rate is new when it
    is neither the bucket's own (the default or the config's) nor the one learned.
    A throttled reply without a wait rests the bucket `penalty` seconds, and at
    least one interval of its rate (a token bucket refills one call per interval)."""
    rate = burst = used = penalty_at = penalty_in = None
    taught = bucket.scope is Scope.SHOP
    if taught and throttle.rate is not None and not _near(throttle.rate, bucket.rate):
        announced = throttle.rate * (1 - LEARNED_MARGIN)
        if grant is None or not _near(announced, grant.rate):
            rate = announced
    if taught and throttle.filling is not None:
        taken, capacity = throttle.filling
        fitting = capacity_burst(capacity)
        if grant is None or fitting != grant.burst:
            burst = fitting
        if grant is None or taken > grant.level + max(1.0, capacity * FILLING_SLACK):
            used = taken
    if throttle.throttled:
        if throttle.retry_at is not None:
            penalty_at = throttle.retry_at
        elif throttle.retry_in is not None:
            penalty_in = throttle.retry_in
        else:
            known = rate or (grant.rate if grant is not None else 0.0)
            penalty_in = max(penalty, 1.0 / known if known > 0 else 0.0)
    return Lesson(rate, burst, used, penalty_at, penalty_in)


def should_retry(throttle: Throttle, *, wait: float, budget: float, replayable: bool, retried: bool) -> bool:
    """One more try of a call the platform refused at its gate: safe for any method
    (it was not processed) when the body can be sent again and the wait fits."""
    return throttle.throttled and replayable and not retried and wait <= budget


def _near(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)
