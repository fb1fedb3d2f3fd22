"""This process's copy of the tokens it uses, so the hot path can skip the store.

An entry is used without a store read while it is younger than
`token_cache_seconds` and the token policy says USE for it. Each token gets a
per-process jitter for its refresh point when it first enters the cache, kept
for as long as the same token is cached (design §4 rule 8).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus
from authproxy.tokens.policy import Action, Timing, decide, refresh_point

#: told the expiry of every token the cache takes in (for the metrics)
ExpiryListener = Callable[[TokenKey, float], None]
JITTER = (1.0, 1.5)


@dataclass(frozen=True)
class Cached:
    record: TokenRecord
    loaded_at: float  # time.monotonic()
    jitter: float
    #: wall-clock time before which the policy says USE whatever else holds (valid, and not
    #: yet at its refresh point): no policy call per request until then
    use_before: float


class TokenCache:
    def __init__(self, max_age: float, timing: Timing, on_expiry: ExpiryListener) -> None:
        self.max_age = max_age
        self.timing = timing
        self.on_expiry = on_expiry
        self._entries: dict[TokenKey, Cached] = {}

    def fresh(self, key: TokenKey, now: float) -> Token | None:
        """The token to use without reading the store, if there is one."""
        cached = self._entries.get(key)
        if cached is None or cached.record.status is not TokenStatus.OK:
            return None
        if time.monotonic() - cached.loaded_at >= self.max_age:
            return None
        if now < cached.use_before:
            return cached.record.token
        decision = decide(cached.record, now, self.timing, jitter=cached.jitter)
        return decision.token if decision.action is Action.USE else None

    def jitter(self, key: TokenKey) -> float:
        cached = self._entries.get(key)
        return cached.jitter if cached is not None else JITTER[0]

    def remember(self, key: TokenKey, record: TokenRecord | None, read_started: float | None = None) -> None:
        """Cache what was read or written, unless something newer was cached
        while this read was under way (a slow read must not undo a refresh)."""
        previous = self._entries.get(key)
        if read_started is not None and previous is not None and previous.loaded_at > read_started:
            return
        if record is None or record.token is None:
            self._entries.pop(key, None)
            return
        same = previous is not None and previous.record.token == record.token
        jitter = previous.jitter if previous is not None and same else random.uniform(*JITTER)
        token = record.token
        expiry = token.expires_at if token.expires_at is not None else math.inf
        use_before = min(refresh_point(token, self.timing, jitter), expiry)
        self._entries[key] = Cached(record, time.monotonic(), jitter, use_before)
        if record.token.expires_at is not None:
            self.on_expiry(key, record.token.expires_at)

    def forget(self, key: TokenKey) -> None:
        self._entries.pop(key, None)
