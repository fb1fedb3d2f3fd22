"""What a shop needs beyond its token, looked up once and stored with it (TikTok's shop_cipher).

A platform says when a shop's token lacks something its calls need that an API
call can tell (`Platform.lacks_details`: TikTok, a shop_cipher neither the
config nor the record holds). Then, once per shop and process at a time, the
store is read first (another process may have looked already), else the
platform's call is made with the shop's token and what it tells is merged
into the record's `extra`, under the shop's refresh lock (the protocol's
writes and marks are never raced) by compare-and-set, so nothing written
meanwhile is overwritten; a refresh carries `extra` over to the next token.
While the lock is held elsewhere (a refresh under way), the details are kept in
this process and stored by a later call, STORE_RETRY seconds on. A lookup that
fails is not tried again by this process with the same access token for
RETRY_AFTER seconds (a new token, after a refresh, tries at once); calls go on
without (as they did before lookups existed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping

import aiohttp

from authproxy.errors import RefreshError, StoreUnavailable
from authproxy.models import Clock, HttpRequest, Token, TokenKey
from authproxy.platforms import Platform
from authproxy.settings import ServerSettings
from authproxy.store import TokenStore
from authproxy.tokens.cache import TokenCache
from authproxy.tokens.endpoint import call_token_endpoint

log = logging.getLogger("authproxy.tokens")
RETRY_AFTER = 60.0
STORE_RETRY = 5.0


class ShopDetails:
    """One app's lookups of shop details."""

    def __init__(
        self,
        app: str,
        platform: Platform,
        store: TokenStore,
        session: aiohttp.ClientSession,
        server: ServerSettings,
        clock: Clock,
        cache: TokenCache,
    ) -> None:
        self.app, self.platform, self.store, self.session = app, platform, store, session
        self.server, self.clock, self.cache = server, clock, cache
        self._flights: dict[str, asyncio.Task[Token]] = {}
        #: shop -> (when this process may look or store again, the access token that failed)
        self._failed: dict[str, tuple[float, str]] = {}
        self._known: dict[str, dict[str, str]] = {}  # looked up, not stored yet (the lock was busy)

    async def complete(self, shop: str, token: Token) -> Token:
        """`token` with the shop's details (looked up and stored when missing); `token` as
        it is when they cannot be had now. Never raises for a failed lookup."""
        if not self.platform.lacks_details(shop, token):
            return token
        until, failed_with = self._failed.get(shop, (0.0, ""))
        if self.clock.now() < until and (failed_with == token.access_token or shop in self._known):
            known = self._known.get(shop)
            return with_extra(token, known) if known is not None else token
        flight = self._flights.get(shop)
        if flight is None:
            flight = asyncio.create_task(self._look_up(shop, token))
            self._flights[shop] = flight
            flight.add_done_callback(lambda _: self._flights.pop(shop, None))
        found = await asyncio.shield(flight)
        return found if found.access_token == token.access_token else token

    async def _look_up(self, shop: str, token: Token) -> Token:
        key = TokenKey(self.app, shop)
        try:
            record = await self.store.get(key)
            if record is not None and record.token and not self.platform.lacks_details(shop, record.token):
                self.cache.forget(key)  # another process stored them: read them next time
                return with_extra(token, record.token.extra)
            details = self._known.pop(shop, None) or await self._ask(shop, token)
            if details is None:
                self._failed[shop] = (self.clock.now() + RETRY_AFTER, token.access_token)
                return token
            if not await self._store(key, details):
                self._known[shop] = details
                self._failed[shop] = (self.clock.now() + STORE_RETRY, token.access_token)
        except StoreUnavailable as exc:
            self._failed[shop] = (self.clock.now() + RETRY_AFTER, token.access_token)
            log.warning("shop details of %s not stored: %s", key, exc.detail)
            return token
        return with_extra(token, details)

    async def _ask(self, shop: str, token: Token) -> dict[str, str] | None:
        signed = self.platform.details_request(shop, token, self.clock.now())
        url = self.platform.base_url + signed.path + ("?" + signed.query if signed.query else "")
        request = HttpRequest(signed.method, url, dict(signed.headers))
        key = TokenKey(self.app, shop)
        try:
            reply = await call_token_endpoint(self.session, request, self.server.token_timeout)
        except RefreshError as exc:
            log.warning("shop details of %s: lookup failed (%s)", key, exc)
            return None
        details = self.platform.parse_details(shop, reply)
        if details is None:
            log.warning("shop details of %s: the platform answered HTTP %s", key, reply.status)
        else:  # what was kept says whether the shop was found (TikTok: shop_cipher or not)
            fields = {"app": self.app, "shop": shop, **details}
            log.info("shop details of %s: %s", key, details, extra={"fields": fields})
        return details

    async def _store(self, key: TokenKey, details: dict[str, str]) -> bool:
        """Merge `details` into the stored token's extra, under the lock; False when it is held."""
        lock = self.store.lock(key, self.server.lock_ttl)
        if not await lock.acquire():
            return False
        try:
            record = await self.store.get(key)
            if record is None or record.token is None:
                return True  # nothing to keep them with (deleted meanwhile): looked up again next time
            if record.spending:
                return False  # a refresh's outcome may still be written back: leave its mark alone
            merged = dataclasses.replace(record, token=with_extra(record.token, details))
            version = await self.store.put(key, merged, expected_version=record.version)
            if version is None:
                return False  # a write under nobody's lock (tokens set): store them next time
            self.cache.remember(key, dataclasses.replace(merged, version=version))
            return True
        finally:
            await lock.release()


def with_extra(token: Token, extra: Mapping[str, str]) -> Token:
    return dataclasses.replace(token, extra={**token.extra, **extra})
