"""TokenProvider: the shop's current token, and the refresh protocol (design §4).

1. single flight per process      (`_flights`: one task per key, shielded)
2. lock across processes          (`store.lock`: owner token, TTL > token timeout)
3. double check under the lock    (`_refresh_locked` reloads first)
4. waiters wait for the result    (`store.wait_for_change`, bounded by the TTL)
5. compare-and-set write          (`_save`, before anything else happens)
6. rejected refresh               (`_rejected`: adopt a newer token or mark the shop)
7. failed refresh                 (`_failed`: per-shop backoff; a valid token is kept)
8. proactive refresh with jitter  (`TokenCache.refresh_point`, refreshed in the background)
9. replay rule                    (`after_rejection`: refresh only if the sent token is stored)

The hot path is one store read at most, and none while the token is cached
in this process (token_cache.py) and not near its refresh point.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import math
import random

import aiohttp

from authproxy.errors import (
    NeedsReauthorization,
    RefreshBusy,
    RefreshError,
    RefreshFailed,
    RefreshRejected,
    StoreUnavailable,
    UnknownShop,
)
from authproxy.metrics import Metrics
from authproxy.models import (
    Clock,
    Token,
    TokenKey,
    TokenRecord,
    TokenStatus,
)
from authproxy.platforms import Platform
from authproxy.settings import ServerSettings
from authproxy.store import TokenStore
from authproxy.token_cache import TokenCache
from authproxy.token_endpoint import call_token_endpoint, put_persistently

log = logging.getLogger("authproxy.tokens")
#: set in a request's context when it waited for a refresh (for its log line)
refreshed_here: contextvars.ContextVar[bool] = contextvars.ContextVar("refreshed", default=False)


class TokenProvider:
    def __init__(
        self,
        store: TokenStore,
        session: aiohttp.ClientSession,
        server: ServerSettings,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.session = session
        self.server = server
        self.clock = clock
        self.metrics = metrics
        self.cache = TokenCache(server, lambda key, at: metrics.token_expiry(key.app, key.shop, at))
        self._flights: dict[TokenKey, asyncio.Task[Token]] = {}
        self._reads: dict[TokenKey, asyncio.Task[TokenRecord | None]] = {}

    # -- public -------------------------------------------------------------------------

    async def current(self, key: TokenKey, platform: Platform) -> Token:
        """The token to send now, refreshing first only when it is unusable."""
        now = self.clock.now()
        token = self.cache.fresh(key, now)
        if token is not None:
            return token
        record = await self._load(key, shared=True)
        return await self._decide(key, platform, record, now)

    async def after_rejection(self, key: TokenKey, platform: Platform, sent: Token) -> Token:
        """The platform said `sent` is invalid: the token to replay with (rule 9)."""
        record = await self._load(key)
        now = self.clock.now()
        stored = record.token if record else None
        if stored is not None and stored.access_token != sent.access_token and stored.is_valid(now):
            return stored  # someone refreshed meanwhile: use the newer one
        if record is not None and record.status is TokenStatus.NEEDS_REAUTHORIZATION:
            raise NeedsReauthorization(self._reauth_detail(key, record))
        self._check_cooldown(key, record, now)
        return await self._refresh(key, platform, record.version if record else 0)

    async def drain(self) -> None:
        """Wait for every refresh in flight (shutdown; tests of background refresh)."""
        while self._flights:
            await asyncio.gather(*self._flights.values(), return_exceptions=True)

    # -- reading --------------------------------------------------------------------------

    async def _load(self, key: TokenKey, *, shared: bool = False) -> TokenRecord | None:
        """Read the record. `shared` (the hot path only): concurrent readers of one
        key share one store read. The protocol's own reads must start after the
        event they follow (lock taken, rejection seen), so they never share."""
        read = self._reads.get(key) if shared else None
        if read is None:
            read = asyncio.create_task(self._read(key))
            if shared:
                self._reads[key] = read
                read.add_done_callback(lambda _: self._reads.pop(key, None))
        return await asyncio.shield(read)

    async def _read(self, key: TokenKey) -> TokenRecord | None:
        started = asyncio.get_running_loop().time()
        record = await self.store.get(key)
        self.cache.remember(key, record, read_started=started)
        return record

    async def _decide(
        self, key: TokenKey, platform: Platform, record: TokenRecord | None, now: float
    ) -> Token:
        if record is None or record.token is None:
            if platform.token_request(key.shop, None, now) is None:
                raise self._no_token(key, platform, record)
            self._check_cooldown(key, record, now)
            return await self._refresh(key, platform, record.version if record else 0)
        token = record.token
        reauthorize = record.status is TokenStatus.NEEDS_REAUTHORIZATION
        if token.is_valid(now):
            if self.cache.due(key, now) and not reauthorize and now >= record.retry_at:
                self._refresh_in_background(key, platform, record)
            return token
        if reauthorize:
            raise NeedsReauthorization(self._reauth_detail(key, record))
        self._check_cooldown(key, record, now)
        return await self._refresh(key, platform, record.version)

    def _no_token(self, key: TokenKey, platform: Platform, record: TokenRecord | None) -> Exception:
        if record is not None and record.status is TokenStatus.NEEDS_REAUTHORIZATION:
            return NeedsReauthorization(self._reauth_detail(key, record))
        if platform.is_configured(key.shop):
            return NeedsReauthorization(f"no token is stored for shop {key.shop!r} of {key.app!r}")
        return UnknownShop(f"shop {key.shop!r} of app {key.app!r} has no token and no config")

    def _reauth_detail(self, key: TokenKey, record: TokenRecord) -> str:
        reason = f": {record.last_error}" if record.last_error else ""
        return f"shop {key.shop!r} of {key.app!r} must be authorized again{reason}"

    def _check_cooldown(self, key: TokenKey, record: TokenRecord | None, now: float) -> None:
        if record is not None and now < record.retry_at:
            wait = math.ceil(record.retry_at - now)
            raise RefreshFailed(
                f"refreshing {key} failed ({record.last_error}); next attempt in {wait}s",
                retry_after=wait,
            )

    # -- refreshing -------------------------------------------------------------------------

    def _refresh_in_background(self, key: TokenKey, platform: Platform, record: TokenRecord) -> None:
        if key in self._flights:
            return
        flight = self._start_flight(key, platform, record.version)
        flight.add_done_callback(_log_background_failure)

    async def _refresh(self, key: TokenKey, platform: Platform, seen_version: int) -> Token:
        flight = self._flights.get(key) or self._start_flight(key, platform, seen_version)
        refreshed_here.set(True)
        # shielded: a client that goes away must not cancel a refresh others wait on
        return await asyncio.shield(flight)

    def _start_flight(self, key: TokenKey, platform: Platform, seen_version: int) -> asyncio.Task[Token]:
        flight = asyncio.create_task(self._refresh_across_processes(key, platform, seen_version))
        self._flights[key] = flight
        flight.add_done_callback(lambda _: self._flights.pop(key, None))
        return flight

    async def _refresh_across_processes(self, key: TokenKey, platform: Platform, seen_version: int) -> Token:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + 2 * self.server.lock_ttl
        while True:
            lock = self.store.lock(key, self.server.lock_ttl)
            if await lock.acquire():
                self.metrics.lock_wait(loop.time() - started)
                try:
                    return await self._refresh_locked(key, platform, seen_version)
                finally:
                    await lock.release()
            left = deadline - loop.time()
            if left <= 0:
                raise RefreshBusy(f"another worker is refreshing {key}", retry_after=1)
            if await self.store.wait_for_change(key, seen_version, min(left, self.server.lock_ttl)):
                record = await self._load(key)
                token = self._adopt(key, record)
                if token is not None:
                    self.metrics.lock_wait(loop.time() - started)
                    return token
                seen_version = record.version if record else 0
            # no result within the TTL: the holder died; its lock expires, take it over

    def _adopt(self, key: TokenKey, record: TokenRecord | None) -> Token | None:
        """The outcome another worker wrote: a token, an error, or None to go on."""
        now = self.clock.now()
        if record is None or record.token is None:
            return None
        if record.token.is_valid(now):
            return record.token
        if record.status is TokenStatus.NEEDS_REAUTHORIZATION:
            raise NeedsReauthorization(self._reauth_detail(key, record))
        self._check_cooldown(key, record, now)
        return None

    async def _refresh_locked(self, key: TokenKey, platform: Platform, seen_version: int) -> Token:
        record = await self._load(key)
        now = self.clock.now()
        version = record.version if record else 0
        if record is not None and version != seen_version:
            token = self._adopt(key, record)  # rule 3: someone else already did it
            if token is not None and now < self.cache.refresh_point(token):
                return token
        if record is not None and record.status is TokenStatus.NEEDS_REAUTHORIZATION:
            raise NeedsReauthorization(self._reauth_detail(key, record))
        self._check_cooldown(key, record, now)
        current = record.token if record else None
        request = platform.token_request(key.shop, current, now)
        if request is None:
            raise self._no_token(key, platform, record)
        try:
            reply = await call_token_endpoint(self.session, request, self.server.token_timeout)
            token = platform.parse_token(key.shop, reply, current, self.clock.now())
        except RefreshRejected as exc:
            self.metrics.refresh(key.app, "rejected")
            return await self._rejected(key, record, str(exc))
        except RefreshError as exc:
            self.metrics.refresh(key.app, "failed")
            return await self._failed(key, record, str(exc))
        self.metrics.refresh(key.app, "ok")
        return await self._save(key, record, token)

    # -- writing the outcome ----------------------------------------------------------------

    async def _save(self, key: TokenKey, read: TokenRecord | None, token: Token) -> Token:
        """Write the new token at once (rule 5); a rotated refresh token must not be lost."""
        record = TokenRecord(token=token, last_refresh=token.obtained_at)
        try:
            version = await put_persistently(self.store, key, record, read.version if read else 0)
            if version is None:  # our lock expired and someone wrote meanwhile
                latest = await self.store.get(key)
                if _superseded(latest, read):
                    log.warning("token for %s changed while refreshing; keeping the stored one", key)
                    self.cache.remember(key, latest)
                    return self._adopt(key, latest) or token
                version = await put_persistently(self.store, key, record, latest.version if latest else 0)
        except StoreUnavailable:
            log.error("could not store the new token for %s; only this process has it", key)
            version = read.version if read else 0
        self.cache.remember(key, dataclasses.replace(record, version=version or 0))
        log.info("refreshed token for %s (expires in %s)", key, _expires_in(token, self.clock))
        return token

    async def _rejected(self, key: TokenKey, read: TokenRecord | None, reason: str) -> Token:
        """Rule 6: adopt a token another worker rotated, else mark the shop."""
        latest = await self._load(key)
        if latest is not None and latest.version != (read.version if read else 0):
            token = self._adopt(key, latest)
            if token is not None:
                return token
        marked = TokenRecord(
            token=latest.token if latest else None,
            status=TokenStatus.NEEDS_REAUTHORIZATION,
            last_refresh=latest.last_refresh if latest else None,
            last_error=reason,
        )
        await self.store.put(key, marked, expected_version=latest.version if latest else 0)
        self.cache.forget(key)
        log.warning("shop %s needs re-authorization: %s", key, reason)
        raise NeedsReauthorization(f"shop {key.shop!r} of {key.app!r} must be authorized again: {reason}")

    async def _failed(self, key: TokenKey, read: TokenRecord | None, reason: str) -> Token:
        """Rule 7: back off per shop; keep serving a token that is still valid."""
        now = self.clock.now()
        failures = (read.failures if read else 0) + 1
        delay = min(self.server.backoff_max, self.server.backoff_base * 2 ** (failures - 1))
        delay *= random.uniform(0.75, 1.25)
        base = read or TokenRecord(token=None)
        failed = dataclasses.replace(base, failures=failures, retry_at=now + delay, last_error=reason)
        await self.store.put(key, failed, expected_version=base.version)
        await self._load(key)
        log.warning("refresh of %s failed (%s); next attempt in %.1fs", key, reason, delay)
        if read is not None and read.token is not None and read.token.is_valid(now):
            return read.token
        raise RefreshFailed(f"refreshing {key} failed: {reason}", retry_after=math.ceil(delay))


def _superseded(latest: TokenRecord | None, read: TokenRecord | None) -> bool:
    """Whether the store holds a token renewed from another credential than ours."""
    if latest is None or latest.token is None:
        return False
    used = read.token.refresh_token if read is not None and read.token is not None else None
    return latest.token.refresh_token != used


def _expires_in(token: Token, clock: Clock) -> str:
    if token.expires_at is None:
        return "never"
    return f"{token.expires_at - clock.now():.0f}s"


def _log_background_failure(task: asyncio.Task[Token]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("background refresh failed: %s", exc)
