"""Keep-alive: idle shops are refreshed before their refresh credential dies, and every
shop with a known horizon is warned before its authorisation ends, traffic or not.

Each shop's next check lives in the due index (store/due.py), written after
every write of its record (aftercare.py: a refresh, whoever caused it, moves
it on, so a busy shop is never due) and seeded at start-up for the shops the
index lacks. There is no leader: every replica runs this loop, and each
round claims due shops with a lease, so a shop goes to one replica at a
time and one that dies mid-work costs only the lease. A round:

1. per app (in random order), claim as many due shops as this process has
   free slots (`concurrency`), within the app's budget (`max_per_minute`,
   across replicas: the platform's token endpoint sees a bounded rate when
   thousands fall due at once);
2. hand each to `ShopTokens.keep_alive`, which sends a due warning, refreshes
   the shop through the refresh protocol if it is still due (double-checked
   under the lock) and schedules its next check;
3. wait `tick` (jittered), or less while claims come back full.

User traffic goes first: keep-alive work is a few refreshes per process at
most, never waits for a lock a request holds, and skips a shop whose refresh
is under way. A failed refresh is retried at the record's backoff; a
rejected one marks the shop (rule 6) and takes it out of the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping, Sequence

from authproxy.errors import StoreUnavailable
from authproxy.metrics import Metrics
from authproxy.models import Clock, SystemClock, TokenKey
from authproxy.settings import KeepAliveSettings
from authproxy.store import TokenStore
from authproxy.store.due import MAX_CLAIM, DueIndex
from authproxy.tokens.provider import ShopTokens

log = logging.getLogger("authproxy.keepalive")
SEED_YIELD_EVERY = 100  # shops seeded between two yields to the event loop


class KeepAlive:
    def __init__(
        self,
        apps: Mapping[str, ShopTokens],
        configured: Mapping[str, Sequence[str]],
        store: TokenStore,
        index: DueIndex,
        settings: KeepAliveSettings,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        self.apps, self.configured = apps, configured
        self.store, self.index, self.settings = store, index, settings
        self.clock, self.metrics = clock, metrics
        self._working: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._store_down = False

    async def start(self) -> None:
        if self.settings.enabled and self.apps:
            self._task = asyncio.create_task(self.run(), name="authproxy-keepalive")

    async def stop(self) -> None:
        """Stop claiming; let the refreshes under way finish (a rotated pair must land)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.idle()

    async def idle(self) -> None:
        """Wait until the shops claimed so far are dealt with."""
        while self._working:
            await asyncio.wait(self._working)

    async def run(self) -> None:
        task = asyncio.current_task()
        await self._seed_until_done()
        while True:
            pause = await self.round()
            if task is not None and task.cancelling():
                # redis-py (8.1) can swallow a cancellation that lands mid-command
                raise asyncio.CancelledError
            await asyncio.sleep(pause)

    # -- seeding ------------------------------------------------------------------------------

    async def _seed_until_done(self) -> None:
        while True:
            try:
                seeded = await self.seed()
            except StoreUnavailable as exc:
                log.warning("keep-alive: store unavailable (%s); seeding again in a tick", exc.detail)
                await asyncio.sleep(self._tick())
                continue
            if seeded:
                log.info("keep-alive: %d shop(s) added to the due index", seeded)
            return

    async def seed(self) -> int:
        """Put every stored (or configured, seeded) shop the index lacks in it; how many."""
        stored: dict[str, list[str]] = {}
        for key in await self.store.keys():
            stored.setdefault(key.app, []).append(key.shop)
        seeded = 0
        for app, tokens in self.apps.items():
            known = await self.index.members(app)
            configured = [shop for shop in self.configured.get(app, ()) if tokens.aftercare.seeded(shop)]
            for shop in dict.fromkeys([*stored.get(app, []), *configured]):
                if shop in known:
                    continue
                key = TokenKey(app, shop)
                await tokens.aftercare.check(key, await self.store.get(key), only_new=True)
                seeded += 1
                if seeded % SEED_YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # yield to requests
        return seeded

    # -- claiming -------------------------------------------------------------------------------

    async def round(self) -> float:
        """Claim and start what is due; the seconds to wait before the next round."""
        full = False
        apps = list(self.apps.items())
        random.shuffle(apps)
        try:
            for app, tokens in apps:
                free = min(self.settings.concurrency - len(self._working), MAX_CLAIM)
                if free <= 0:
                    full = True
                    break
                claimed = await self.index.claim(
                    app,
                    limit=free,
                    lease=self.settings.lease,
                    now=self._claim_now(),
                    per_minute=self.settings.max_per_minute,
                )
                for key in claimed:
                    self._start(tokens, key)
                full = full or len(claimed) == free
        except StoreUnavailable as exc:
            if not self._store_down:
                log.warning("keep-alive: store unavailable (%s); claims resume when it answers", exc.detail)
            self._store_down = True
            return self._tick()
        if self._store_down:
            log.info("keep-alive: store available again")
            self._store_down = False
        if full:  # more may be due: go on as soon as a slot frees up
            await asyncio.wait(self._working, timeout=self._tick(), return_when=asyncio.FIRST_COMPLETED)
            return 0.0
        return self._tick()

    def _start(self, tokens: ShopTokens, key: TokenKey) -> None:
        work = asyncio.create_task(self._keep(tokens, key))
        self._working.add(work)
        work.add_done_callback(self._working.discard)

    async def _keep(self, tokens: ShopTokens, key: TokenKey) -> None:
        try:
            outcome = await tokens.keep_alive(key.shop)
        except StoreUnavailable as exc:
            log.warning(
                "keep-alive of %s: store unavailable (%s); due again after its lease", key, exc.detail
            )
            outcome_name = "store_unavailable"
        except Exception:
            log.exception("keep-alive of %s failed; due again after its lease", key)
            outcome_name = "error"
        else:
            outcome_name = outcome.value
            log.debug("keep-alive of %s: %s", key, outcome_name)
        self.metrics.keepalive(key.app, outcome_name)

    def _claim_now(self) -> float | None:
        """The store's clock in production (replicas agree on leases); an injected one in tests."""
        return None if isinstance(self.clock, SystemClock) else self.clock.now()

    def _tick(self) -> float:
        return self.settings.tick * random.uniform(0.8, 1.2)
