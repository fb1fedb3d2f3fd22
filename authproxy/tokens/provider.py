"""ShopTokens: one app's shop tokens, and the refresh protocol (design §4).

1. single flight per process      (`_flights`: one task per shop, shielded)
2. lock across processes          (refresh.py: owner token, TTL > token timeout)
3. double check under the lock    (refresh.py reloads first)
4. waiters wait for the result    (refresh.py: `store.wait_for_change`, until the holder's lock expires)
5. compare-and-set write          (keeper.py: before anything else; kept if the store fails)
6. rejected refresh               (refresh.py: adopt a token another worker rotated, else mark)
7. failed refresh                 (refresh.py: per-shop backoff; a valid token is kept)
8. proactive refresh with jitter  (policy REFRESH_SOON: refreshed in the background)
9. replay rule                    (`after_rejection`: refresh only if the sent token is stored)

What to do with a record is policy.py's `decide`; `_act` carries it out.
The hot path is one store read at most, and none while the token is cached
in this process (cache.py) and the policy says USE. Every write of a record
is followed by its events and its next keep-alive check (aftercare.py).

Before a platform whose refresh credential may be single use (Shopee...) is
called, the record is marked as `spending` by this lock's owner; the write of
the outcome clears it. A worker that takes over the lock and finds another
owner's mark waits a short grace for that owner's write-back (keeper.py)
before it presents the credential itself, unless it already watched the
store that long while waiting for the lock.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging

import aiohttp

from authproxy.errors import RefreshBusy
from authproxy.events import Events
from authproxy.metrics import Metrics
from authproxy.models import Clock, Token, TokenKey, TokenRecord
from authproxy.platforms import Platform
from authproxy.settings import ServerSettings
from authproxy.store import ANY_VERSION, TokenStore
from authproxy.store.due import DueIndex
from authproxy.tokens.aftercare import Aftercare
from authproxy.tokens.answers import no_token, settled
from authproxy.tokens.details import ShopDetails
from authproxy.tokens.endpoint import call_token_endpoint
from authproxy.tokens.keeper import Kept
from authproxy.tokens.policy import Action, Decision, Upkeep, decide
from authproxy.tokens.refresh import Outcome, Refresher

log = logging.getLogger("authproxy.tokens")
#: set in a request's context when it waited for a refresh (for its log line)
refreshed_here: contextvars.ContextVar[bool] = contextvars.ContextVar("refreshed", default=False)


class ShopTokens:
    """The tokens of one configured app's shops."""

    def __init__(
        self,
        app: str,
        platform: Platform,
        store: TokenStore,
        session: aiohttp.ClientSession,
        server: ServerSettings,
        clock: Clock,
        metrics: Metrics,
        *,
        upkeep: Upkeep | None = None,
        events: Events | None = None,
        due: DueIndex | None = None,
    ) -> None:
        self.app, self.platform, self.store, self.clock = app, platform, store, clock
        upkeep = upkeep or Upkeep(idle_lifetime=platform.idle_lifetime)
        self.aftercare = Aftercare(platform, upkeep, clock, events, due)
        self.refresher = Refresher(app, platform, store, session, server, clock, metrics, self.aftercare)
        self.session, self.server, self.metrics = session, server, metrics
        self.timing, self.cache = self.refresher.timing, self.refresher.cache
        self.keeper = self.refresher.keeper
        self.details = ShopDetails(app, platform, store, session, server, clock, self.cache)
        self._flights: dict[str, asyncio.Task[Token]] = {}
        self._reads: dict[str, asyncio.Task[TokenRecord | None]] = {}
        self._upkeep: dict[str, asyncio.Task[Outcome]] = {}  # keep-alive refreshes under way

    def key(self, shop: str) -> TokenKey:
        return TokenKey(self.app, shop)

    # -- public -------------------------------------------------------------------------

    async def current(self, shop: str) -> Token:
        """The token to send now, refreshing first only when it is unusable, with the shop's
        details (TikTok's shop_cipher) looked up when neither the config nor the token has them."""
        key, now = self.key(shop), self.clock.now()
        kept = self.keeper.kept(key)
        token = self.cache.fresh(key, now) if kept is None else None  # the common case
        if token is None:
            token = await self._decided(shop, key, kept, now)
        if self.platform.lacks_details(shop, token):
            return await self.details.complete(shop, token)
        return token

    async def _decided(self, shop: str, key: TokenKey, kept: Kept | None, now: float) -> Token:
        """The token the policy decides on: for the pair this process keeps, else for the
        stored record (read once for every caller waiting on it), refreshing if it says so."""
        if kept is not None:
            return await self._act(shop, kept.record, decide(kept.record, now, self.timing))
        record = await self._load(shop, shared=True)
        return await self._act(shop, record, decide(record, now, self.timing, jitter=self.cache.jitter(key)))

    async def after_rejection(self, shop: str, sent: Token) -> Token:
        """The platform said `sent` is invalid: the token to replay with (rule 9)."""
        token = await self._after_rejection(shop, sent)
        if self.platform.lacks_details(shop, token):
            return await self.details.complete(shop, token)
        return token

    async def _after_rejection(self, shop: str, sent: Token) -> Token:
        """A token other than `sent`. A refresh that did not know of the rejection (one
        under way here already, or another process's whose outcome left the stored token
        as it was) may settle on `sent`: asked once more, from a fresh read, and then a
        RefreshBusy rather than a replay that would only pass the refusal on."""
        for _ in range(2):
            kept = self.keeper.kept(self.key(shop))
            record = kept.record if kept is not None else await self._load(shop)
            decision = decide(record, self.clock.now(), self.timing, rejected=sent.access_token)
            if decision.token is not None:
                return decision.token  # someone refreshed meanwhile: use the newer one
            token = await self._act(shop, record, decision)
            if token.access_token != sent.access_token:
                return token
        raise RefreshBusy(f"no token of {self.key(shop)} other than the one refused yet", retry_after=1)

    async def authorize(self, shop: str, code: str, redirect: str | None) -> dict[str, Token]:
        """Exchange an authorization code; store each token it covers, fresh.

        Raises RefreshRejected (the code was refused), RefreshError,
        NotImplementedError (no code exchange) and StoreUnavailable."""
        request = self.platform.code_request(shop, code, redirect, self.clock.now())
        reply = await call_token_endpoint(self.session, request, self.server.token_timeout)
        tokens = self.platform.parse_code_reply(shop, reply, self.clock.now())
        for name, token in tokens.items():
            await self.replace(name, TokenRecord(token=token, last_refresh=token.obtained_at))
            log.info("authorized %s", self.key(name), extra={"fields": {"app": self.app, "shop": name}})
        # the shop's details (TikTok's shop_cipher) right away, not at its first call
        return {name: await self.details.complete(name, token) for name, token in tokens.items()}

    async def replace(self, shop: str, record: TokenRecord) -> TokenRecord:
        """Store a new grant (a code exchange, `tokens set`) over whatever is stored,
        a `needs_reauthorization` mark included: a new grant is what it waits for."""
        key = self.key(shop)
        before = await self.store.get(key)
        version = await self.store.put(key, record, expected_version=ANY_VERSION, durable=True)
        self.cache.forget(key)
        stored = record if version is None else dataclasses.replace(record, version=version)
        await self.aftercare.written(key, before, stored)
        return stored

    async def delete(self, shop: str) -> bool:
        """Forget the shop's stored token (its configured credential, if any, is used again)."""
        key = self.key(shop)
        found = await self.store.delete(key)
        self.cache.forget(key)
        await self.aftercare.schedule(key, None)
        return found

    async def keep_alive(self, shop: str) -> Outcome:
        """Keep-alive's entry (keepalive.py): send the expiry warning due now, refresh the
        shop if it is due for an idle refresh, and schedule its next check. User traffic
        goes first: a shop with a refresh in flight here, or whose lock is held anywhere,
        is skipped (that refresh's write reschedules it). The refresh is double-checked
        under the lock, so of replicas that claimed the shop one after another (a lease
        that ran out), only the first refreshes it."""
        key = self.key(shop)
        if self._busy(shop):
            return Outcome.BUSY
        record = await self._load(shop)
        await self.aftercare.warn(key, record)
        due = self.aftercare.refresh_at(shop, record)
        if due is None or self.clock.now() < due:
            await self.aftercare.schedule(key, record)  # its next warning, or refreshed meanwhile
            return Outcome.NOT_DUE
        if self._busy(shop):
            return Outcome.BUSY
        refresh = asyncio.create_task(self.refresher.keep_alive(shop))
        self._upkeep[shop] = refresh
        refresh.add_done_callback(lambda _: self._upkeep.pop(shop, None))
        return await asyncio.shield(refresh)  # a rotated pair lands even if keep-alive stops

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for every refresh in flight and every kept pair's write-back (shutdown)."""
        while self._flights or self._upkeep:
            await asyncio.gather(*self._flights.values(), *self._upkeep.values(), return_exceptions=True)
        await self.keeper.drain(timeout)

    def _busy(self, shop: str) -> bool:
        """A refresh of the shop is under way in this process (a user's, or keep-alive's)."""
        return shop in self._flights or shop in self._upkeep or self.keeper.kept(self.key(shop)) is not None

    # -- carrying out a decision -----------------------------------------------------------

    async def _act(self, shop: str, record: TokenRecord | None, decision: Decision) -> Token:
        if decision.action is Action.REFRESH_SOON:
            self._refresh_in_background(shop, record)
        if decision.action is not Action.REFRESH_NOW:
            return settled(self.key(shop), record, decision, self.clock.now())
        has_token = record is not None and record.token is not None
        if not has_token and self.platform.token_request(shop, None, self.clock.now()) is None:
            raise no_token(self.platform, self.key(shop), record)
        return await self._refresh(shop, record.version if record else 0)

    # -- reading --------------------------------------------------------------------------

    async def _load(self, shop: str, *, shared: bool = False) -> TokenRecord | None:
        """Read the record. `shared` (the hot path only): concurrent readers of one
        shop share one store read. The protocol's own reads must start after the
        event they follow (lock taken, rejection seen), so they never share."""
        read = self._reads.get(shop) if shared else None
        if read is None:
            read = asyncio.create_task(self.refresher.read(shop))
            if shared:
                self._reads[shop] = read
                read.add_done_callback(lambda _: self._reads.pop(shop, None))
        return await asyncio.shield(read)

    # -- refreshing -------------------------------------------------------------------------

    def _refresh_in_background(self, shop: str, record: TokenRecord | None) -> None:
        if shop not in self._flights:
            flight = self._start_flight(shop, record.version if record else 0)
            flight.add_done_callback(_log_background_failure)

    async def _refresh(self, shop: str, seen_version: int) -> Token:
        flight = self._flights.get(shop) or self._start_flight(shop, seen_version)
        refreshed_here.set(True)
        # shielded: a client that goes away must not cancel a refresh others wait on
        return await asyncio.shield(flight)

    def _start_flight(self, shop: str, seen_version: int) -> asyncio.Task[Token]:
        if self.keeper.kept(self.key(shop)) is not None:
            flight = asyncio.create_task(self.refresher.renew_kept(shop))
        else:
            flight = asyncio.create_task(self.refresher.across_processes(shop, seen_version))
        self._flights[shop] = flight
        flight.add_done_callback(lambda _: self._flights.pop(shop, None))
        return flight


def _log_background_failure(task: asyncio.Task[Token]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("background refresh failed: %s", exc)
