"""What follows a write of a shop's record: its events, its next keep-alive check.

    written(key, before, after)   shop events the change implies (events/model.py
                                  `changes`), the expiry warning due now if any, and
                                  the shop's next check in the due index
    check(key, record)            the last two alone (start-up seeding)
    warn(key, record), schedule(key, record)   each alone (keep-alive)

Every write of a record goes through here: a refresh (a user's or keep-alive's),
a rejection, a failure, a code exchange, `tokens set`. The record written is
the outcome; these are its consequences, so nothing here raises: an index
write the store refuses is logged and left to the next write or to the
shop's lease running out, an event the store refuses is held (emitter.py).
"""

from __future__ import annotations

import logging

from authproxy.errors import ProxyError, StoreUnavailable
from authproxy.events import Events
from authproxy.models import Clock, TokenKey, TokenRecord, TokenStatus
from authproxy.platforms import Platform
from authproxy.store.due import DueIndex
from authproxy.tokens.policy import Upkeep, idle_refresh_at, next_check

log = logging.getLogger("authproxy.keepalive")


class Aftercare:
    def __init__(
        self,
        platform: Platform,
        upkeep: Upkeep,
        clock: Clock,
        events: Events | None = None,
        due: DueIndex | None = None,
    ) -> None:
        self.platform, self.upkeep, self.clock = platform, upkeep, clock
        self.events, self.due = events, due

    def ends_at(self, record: TokenRecord | None) -> float | None:
        """When the shop's authorisation ends (its horizon), if the platform says."""
        token = record.token if record is not None else None
        return self.platform.authorization_ends(token) if token is not None else None

    def seeded(self, shop: str) -> bool:
        """Whether the config holds a refresh credential for the shop (used while none is stored)."""
        if not self.platform.is_configured(shop):
            return False
        try:
            return self.platform.token_request(shop, None, self.clock.now()) is not None
        except ProxyError:
            return False

    def refresh_at(self, shop: str, record: TokenRecord | None) -> float | None:
        """When keep-alive refreshes the shop (policy.idle_refresh_at)."""
        return idle_refresh_at(shop, record, self.upkeep, seeded=self._seeded_if_needed(shop, record))

    def next_check(self, shop: str, record: TokenRecord | None) -> float | None:
        now = self.clock.now()
        seeded = self._seeded_if_needed(shop, record)
        return next_check(shop, record, now, self.upkeep, self.ends_at(record), seeded=seeded)

    async def written(self, key: TokenKey, before: TokenRecord | None, after: TokenRecord) -> None:
        if self.events is not None:
            await self.events.shop_changed(key, before, after)
        await self.check(key, after)

    async def check(self, key: TokenKey, record: TokenRecord | None, *, only_new: bool = False) -> None:
        """Send the expiry warning due now, then schedule the next check."""
        await self.warn(key, record)
        await self.schedule(key, record, only_new=only_new)

    async def warn(self, key: TokenKey, record: TokenRecord | None) -> None:
        """Send the expiry warning due now, if any (once across replicas: events/expiry.py).
        A shop that needs re-authorization has had its event: no warning is news then."""
        if record is not None and record.status is TokenStatus.NEEDS_REAUTHORIZATION:
            return
        if self.events is not None and record is not None:
            await self.events.authorization_ends(key, self.ends_at(record), self.clock.now())

    async def schedule(self, key: TokenKey, record: TokenRecord | None, *, only_new: bool = False) -> None:
        """Put the shop's next check in the due index, or take it out (None: nothing to do)."""
        if self.due is None:
            return
        due = self.next_check(key.shop, record)
        try:
            if due is None:
                await self.due.unschedule(key)
            else:
                await self.due.schedule(key, due, only_new=only_new)
        except StoreUnavailable as exc:
            log.warning("could not schedule the next keep-alive check of %s (%s)", key, exc.detail)

    def _seeded_if_needed(self, shop: str, record: TokenRecord | None) -> bool:
        token = record.token if record is not None else None
        return (
            self.upkeep.idle_lifetime > 0 and (token is None or not token.refresh_token) and self.seeded(shop)
        )
