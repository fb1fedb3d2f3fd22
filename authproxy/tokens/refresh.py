"""The refresh protocol across processes (design §4 rules 2-7), for one app's shops.

    across_processes(shop, seen)   rules 2-4: the lock, or the result of whoever holds it
    keep_alive(shop)               keep-alive's refresh: the lock or nothing, double-checked
    renew_kept(shop)               a kept pair renewed from its own refresh token (keeper.py)

Under the lock the record is read again (rule 3); a platform whose refresh
credential may be single use has the record marked `spending` before it is
presented. What the token endpoint answers becomes a `Renewal`: the new pair
written by compare-and-set (rule 5, keeper.py), a rejection (rule 6: adopt a
token another worker rotated, else mark the shop), or a failure (rule 7:
per-shop backoff, a still-valid token kept). Each write then goes through
aftercare.py (events, next keep-alive check). ShopTokens (provider.py) turns a
Renewal into the token a request sends, or its error.

A lock this process released can come back: a store failover may promote a
replica that never saw the release. Found holding the shop's lock, such a lock
is released again at once (its owner is remembered for the lock's TTL), so the
shop's refreshes do not stall until it expires.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import logging
import math
import random
import time
from dataclasses import dataclass

import aiohttp

from authproxy.errors import (
    NeedsReauthorization,
    ProxyError,
    RefreshBusy,
    RefreshError,
    RefreshFailed,
    RefreshRejected,
)
from authproxy.metrics import Metrics
from authproxy.models import Clock, Token, TokenKey, TokenRecord, TokenStatus
from authproxy.platforms import Platform
from authproxy.settings import ServerSettings
from authproxy.store import StoreLock, TokenStore
from authproxy.tokens.aftercare import Aftercare
from authproxy.tokens.answers import must_reauthorize, no_token, settled
from authproxy.tokens.cache import TokenCache
from authproxy.tokens.endpoint import call_token_endpoint
from authproxy.tokens.keeper import Keeper
from authproxy.tokens.policy import Action, Timing, decide

log = logging.getLogger("authproxy.tokens")
#: how long a worker watches for another owner's kept pair before spending its credential
SPENDING_GRACE = 3.0
#: most seconds a waiter sleeps past the holder's lock expiry before trying it again
LOCK_MARGIN = 0.05
#: most owners of released locks remembered (a bound on memory; pruned by the lock's TTL)
RELEASED_KEPT = 10_000


class Outcome(enum.StrEnum):
    REFRESHED = "refreshed"  # a new pair, stored
    ADOPTED = "adopted"  # another worker's newer token won (or was there first)
    FAILED = "failed"  # the token endpoint failed: backing off (rule 7)
    REJECTED = "rejected"  # the platform refused the credential: needs_reauthorization (rule 6)
    NOT_DUE = "not_due"  # keep-alive: nothing to refresh now (rescheduled)
    BUSY = "busy"  # keep-alive: a refresh is under way elsewhere (its write reschedules)
    GONE = "gone"  # keep-alive: nothing left to refresh with (out of the index)


@dataclass(frozen=True)
class Renewal:
    """What came of presenting the refresh credential."""

    outcome: Outcome
    token: Token | None = None  # the token to send now, if any
    error: ProxyError | None = None  # what a request gets when there is none

    def result(self) -> Token:
        if self.token is not None:
            return self.token
        assert self.error is not None
        raise self.error


class Refresher:
    def __init__(
        self,
        app: str,
        platform: Platform,
        store: TokenStore,
        session: aiohttp.ClientSession,
        server: ServerSettings,
        clock: Clock,
        metrics: Metrics,
        aftercare: Aftercare,
    ) -> None:
        self.app, self.platform, self.store, self.session = app, platform, store, session
        self.server, self.clock, self.metrics, self.aftercare = server, clock, metrics, aftercare
        self.timing = Timing.of(server)
        expiry = metrics.token_expiry
        self.cache = TokenCache(
            server.token_cache_seconds, self.timing, lambda k, at: expiry(k.app, k.shop, at)
        )
        #: owners of the locks this process released, and when: one found holding a lock is stale
        self._released: dict[str, float] = {}
        self._holding: collections.Counter[TokenKey] = collections.Counter()  # locks held here
        self.keeper = Keeper(
            store,
            self.cache.remember,
            lambda key: metrics.unconfirmed_write(key.app),
            self._remember_released,
        )

    def key(self, shop: str) -> TokenKey:
        return TokenKey(self.app, shop)

    async def read(self, shop: str) -> TokenRecord | None:
        """The stored record, remembered in this process's cache."""
        started = time.monotonic()  # the cache's clock
        record = await self.store.get(self.key(shop))
        self.cache.remember(self.key(shop), record, read_started=started)
        return record

    # -- rules 2-4: the lock, or the holder's result ----------------------------------------

    async def across_processes(self, shop: str, seen_version: int) -> Token:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + 2 * self.server.lock_ttl
        key = self.key(shop)
        while True:
            lock = self.store.lock(key, self.server.lock_ttl)
            if await self._acquire(key, lock):
                self.metrics.lock_wait(loop.time() - started)
                grace = SPENDING_GRACE - (loop.time() - started)
                try:
                    return await self._locked(shop, seen_version, lock, grace)
                finally:
                    await self._release(key, lock)
            left = deadline - loop.time()
            if left <= 0:
                raise RefreshBusy(f"another worker is refreshing {key}", retry_after=1)
            # until the holder's lock expires: if it died, take over right then
            wait = min(left, lock.holder_ttl + LOCK_MARGIN)
            if await self.store.wait_for_change(key, seen_version, wait):
                record = await self.read(shop)
                decision = decide(record, self.clock.now(), self.timing)
                if decision.action is not Action.REFRESH_NOW:
                    self.metrics.lock_wait(loop.time() - started)
                    return settled(self.key(shop), record, decision, self.clock.now())
                seen_version = record.version if record else 0

    async def _locked(self, shop: str, seen_version: int, lock: StoreLock, grace: float) -> Token:
        record = await self._read_locked(shop, lock, grace)
        now = self.clock.now()
        decision = decide(record, now, self.timing)
        moved = (record.version if record else 0) != seen_version
        if decision.action in (Action.REAUTHORIZE, Action.COOL_DOWN) or (
            moved and decision.action is Action.USE
        ):
            return settled(self.key(shop), record, decision, self.clock.now())  # a mark to honour, or rule 3
        return (await self._renew(shop, record, lock, now)).result()

    async def _read_locked(self, shop: str, lock: StoreLock, grace: float) -> TokenRecord | None:
        """Read under the lock; another owner's `spending` mark first gets a moment to land."""
        record = await self.read(shop)
        if record is not None and record.spending not in ("", lock.owner) and grace > 0:
            # another owner may hold the outcome of spending this credential: give it a moment
            if await self.store.wait_for_change(self.key(shop), record.version, grace):
                record = await self.read(shop)
            else:
                log.warning("a refresh of %s never stored its outcome; taking over", self.key(shop))
        return record

    async def _acquire(self, key: TokenKey, lock: StoreLock) -> bool:
        """Take the lock, releasing first a lock of this process's found back (a failover)."""
        taken = await lock.acquire()
        stale = lock.holder
        if not taken and self._released_here(key, stale):
            log.info("%s: a lock this process had released was back (a store failover?); released", key)
            await self.store.lock(key, self.server.lock_ttl, stale).release()
            taken = await lock.acquire()
            if taken:
                self._released.pop(stale, None)
        if taken:
            self._holding[key] += 1
        return taken

    def _released_here(self, key: TokenKey, holder: str) -> bool:
        """Whether `holder` is a lock this process released lately, and nothing of this
        process holds the shop's lock now (its own lock may have been lost with it)."""
        at = self._released.get(holder)
        if at is None or asyncio.get_running_loop().time() - at >= self.server.lock_ttl:
            return False
        return not self._holding[key] and self.keeper.kept(key) is None

    async def _release(self, key: TokenKey, lock: StoreLock) -> None:
        self._holding[key] -= 1
        if not self._holding[key]:
            del self._holding[key]
        if not self.keeper.holds(lock):  # a kept pair releases it once stored
            await lock.release()
            self._remember_released(lock.owner)

    def _remember_released(self, owner: str) -> None:
        now = asyncio.get_running_loop().time()
        if len(self._released) >= RELEASED_KEPT:
            self._released = {o: at for o, at in self._released.items() if now - at < self.server.lock_ttl}
        if len(self._released) < RELEASED_KEPT:
            self._released[owner] = now

    # -- keep-alive -----------------------------------------------------------------------

    async def keep_alive(self, shop: str) -> Outcome:
        """Refresh the shop if it is still due, under its lock; never wait for the lock."""
        key = self.key(shop)
        lock = self.store.lock(key, self.server.lock_ttl)
        if not await self._acquire(key, lock):
            return Outcome.BUSY  # a user's refresh, or another replica's: its write reschedules
        try:
            record = await self._read_locked(shop, lock, SPENDING_GRACE)
            now = self.clock.now()
            due = self.aftercare.refresh_at(shop, record)
            if due is None or now < due:  # refreshed meanwhile (rule 3), or backing off
                await self.aftercare.schedule(key, record)
                return Outcome.NOT_DUE
            return (await self._renew(shop, record, lock, now)).outcome
        except RefreshBusy:
            return Outcome.BUSY
        finally:
            await self._release(key, lock)

    # -- presenting the credential ------------------------------------------------------------

    async def _renew(self, shop: str, record: TokenRecord | None, lock: StoreLock, now: float) -> Renewal:
        current = record.token if record else None
        request = self.platform.token_request(shop, current, now)
        if request is None:
            await self.aftercare.schedule(self.key(shop), None)
            return Renewal(Outcome.GONE, error=no_token(self.platform, self.key(shop), record))
        if self.platform.single_use_refresh:
            await self._mark_spending(shop, record, lock)
        try:
            reply = await call_token_endpoint(self.session, request, self.server.token_timeout)
            token = carried_over(self.platform.parse_token(shop, reply, current, self.clock.now()), current)
        except RefreshRejected as exc:
            self.metrics.refresh(self.app, "rejected")
            return await self._rejected(shop, record, str(exc))
        except RefreshError as exc:
            self.metrics.refresh(self.app, "failed")
            return await self._failed(shop, record, str(exc))
        self.metrics.refresh(self.app, "ok")
        return await self._save(shop, record, token, lock)

    async def _mark_spending(self, shop: str, record: TokenRecord | None, lock: StoreLock) -> None:
        version = record.version if record else 0
        if not await self.store.mark_spending(self.key(shop), version, lock.owner):
            raise RefreshBusy(f"the token of {self.key(shop)} changed under the refresh lock", retry_after=1)

    async def renew_kept(self, shop: str) -> Token:
        """Renew a kept pair from its own refresh token: nobody else knows that one."""
        key = self.key(shop)
        kept = self.keeper.kept(key)
        assert kept is not None
        current = kept.record.token
        request = self.platform.token_request(shop, current, self.clock.now())
        if request is None:
            raise no_token(self.platform, key, kept.record)
        try:
            reply = await call_token_endpoint(self.session, request, self.server.token_timeout)
            token = carried_over(self.platform.parse_token(shop, reply, current, self.clock.now()), current)
        except (RefreshRejected, RefreshError) as exc:
            self.metrics.refresh(self.app, "failed")
            raise RefreshFailed(f"refreshing the kept token of {key} failed: {exc}", retry_after=1) from None
        self.metrics.refresh(self.app, "ok")
        kept.renewed(TokenRecord(token=token, last_refresh=token.obtained_at))
        log.info("refreshed the kept token for %s (expires in %s)", key, expires_in(token, self.clock))
        return token

    # -- writing the outcome ----------------------------------------------------------------

    async def _save(self, shop: str, read: TokenRecord | None, token: Token, lock: StoreLock) -> Renewal:
        """Write the new token at once (rule 5); a rotated refresh token must not be lost."""
        key = self.key(shop)
        current = await self.keeper.save(
            key, TokenRecord(token=token, last_refresh=token.obtained_at), read, lock
        )
        self.cache.remember(key, current)
        if current.token is not token:
            return self._adopted(shop, current)
        log.info("refreshed token for %s (expires in %s)", key, expires_in(token, self.clock))
        await self.aftercare.written(key, read, current)
        return Renewal(Outcome.REFRESHED, token)

    def _adopted(self, shop: str, record: TokenRecord) -> Renewal:
        """Another worker's newer token (or mark) won over ours."""
        decision = decide(record, self.clock.now(), self.timing)
        if decision.token is not None:
            return Renewal(Outcome.ADOPTED, decision.token)
        return Renewal(Outcome.REJECTED, error=must_reauthorize(self.key(shop), record))

    async def _rejected(self, shop: str, read: TokenRecord | None, reason: str) -> Renewal:
        """Rule 6: adopt a token another worker rotated, or one this process keeps (a failover
        may have lost its write), else mark the shop."""
        key = self.key(shop)
        kept = self.keeper.kept(key)
        if kept is not None and kept.record.token is not None:
            log.warning("refresh of %s rejected; serving the pair this process keeps", key)
            return Renewal(Outcome.ADOPTED, kept.record.token)
        latest = await self.read(shop)
        if latest is not None and latest.version != (read.version if read else 0):
            decision = decide(latest, self.clock.now(), self.timing)
            if decision.token is not None:
                return Renewal(Outcome.ADOPTED, decision.token)
        marked = TokenRecord(
            token=latest.token if latest else None,
            status=TokenStatus.NEEDS_REAUTHORIZATION,
            last_refresh=latest.last_refresh if latest else None,
            last_error=reason,
        )
        version = await self.store.put(key, marked, expected_version=latest.version if latest else 0)
        self.cache.forget(key)
        log.warning("shop %s needs re-authorization: %s", key, reason)
        if version is not None:
            await self.aftercare.written(key, latest, dataclasses.replace(marked, version=version))
        detail = f"shop {shop!r} of {self.app!r} must be authorized again: {reason}"
        return Renewal(Outcome.REJECTED, error=NeedsReauthorization(detail))

    async def _failed(self, shop: str, read: TokenRecord | None, reason: str) -> Renewal:
        """Rule 7: back off per shop; keep serving a token that is still valid."""
        key, now = self.key(shop), self.clock.now()
        failures = (read.failures if read else 0) + 1
        delay = min(self.server.backoff_max, self.server.backoff_base * 2 ** (failures - 1))
        delay *= random.uniform(0.75, 1.25)
        base = read or TokenRecord(token=None)
        failed = dataclasses.replace(base, failures=failures, retry_at=now + delay, last_error=reason)
        version = await self.store.put(key, failed, expected_version=base.version)
        await self.read(shop)
        log.warning("refresh of %s failed (%s); next attempt in %.1fs", key, reason, delay)
        if version is not None:
            await self.aftercare.written(key, read, dataclasses.replace(failed, version=version))
        valid = (
            read.token if read is not None and read.token is not None and read.token.is_valid(now) else None
        )
        error = RefreshFailed(f"refreshing {key} failed: {reason}", retry_after=math.ceil(delay))
        return Renewal(Outcome.FAILED, valid, error)


def carried_over(token: Token, current: Token | None) -> Token:
    """A refresh does not move the end of the seller's authorisation: keep a known one."""
    if token.authorized_until is None and current is not None and current.authorized_until is not None:
        return dataclasses.replace(token, authorized_until=current.authorized_until)
    return token


def expires_in(token: Token, clock: Clock) -> str:
    if token.expires_at is None:
        return "never"
    return f"{token.expires_at - clock.now():.0f}s"
