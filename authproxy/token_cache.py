"""This process's copy of the tokens it uses, so the hot path can skip the store.

An entry is used without a store read while it is younger than
`token_cache_seconds`, its status is ok, and the wall clock has not reached
its refresh point: the expiry minus a fraction of the lifetime, jittered per
process so that replicas do not all refresh at once (design §4 rule 8).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus
from authproxy.settings import ServerSettings

#: told the expiry of every token the cache takes in (for the metrics)
ExpiryListener = Callable[[TokenKey, float], None]


@dataclass(frozen=True)
class Cached:
    record: TokenRecord
    loaded_at: float  # event-loop time
    refresh_at: float  # wall clock: when to start a proactive refresh


class TokenCache:
    def __init__(self, server: ServerSettings, on_expiry: ExpiryListener) -> None:
        self.server = server
        self.on_expiry = on_expiry
        self._entries: dict[TokenKey, Cached] = {}

    def fresh(self, key: TokenKey, now: float) -> Token | None:
        """The token to use without reading the store, if there is one."""
        cached = self._entries.get(key)
        if cached is None or cached.record.status is not TokenStatus.OK:
            return None
        token = cached.record.token
        age = asyncio.get_running_loop().time() - cached.loaded_at
        if token is None or age >= self.server.token_cache_seconds or now >= cached.refresh_at:
            return None
        return token if token.is_valid(now) else None

    def due(self, key: TokenKey, now: float) -> bool:
        """Whether the cached token has reached its proactive refresh point."""
        cached = self._entries.get(key)
        return cached is not None and now >= cached.refresh_at

    def remember(self, key: TokenKey, record: TokenRecord | None, read_started: float | None = None) -> None:
        """Cache what was read or written, unless something newer was cached
        while this read was under way (a slow read must not undo a refresh)."""
        previous = self._entries.get(key)
        if read_started is not None and previous is not None and previous.loaded_at > read_started:
            return
        if record is None or record.token is None:
            self._entries.pop(key, None)
            return
        if previous is not None and previous.record.token == record.token:
            refresh_at = previous.refresh_at  # keep this process's jitter for the same token
        else:
            refresh_at = self.refresh_point(record.token)
        self._entries[key] = Cached(record, asyncio.get_running_loop().time(), refresh_at)
        if record.token.expires_at is not None:
            self.on_expiry(key, record.token.expires_at)

    def forget(self, key: TokenKey) -> None:
        self._entries.pop(key, None)

    def refresh_point(self, token: Token) -> float:
        """When to refresh ahead of expiry: a fraction of the lifetime, jittered."""
        if token.expires_at is None:
            return math.inf
        lifetime = token.lifetime() or 0.0
        leeway = min(lifetime * self.server.refresh_before, self.server.refresh_before_max)
        return token.expires_at - leeway * random.uniform(1.0, 1.5)
