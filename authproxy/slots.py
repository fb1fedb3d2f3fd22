"""Caps concurrent upstream calls per token across every process sharing the store
(Shoptet allows 3 per token and answers 429 to a 4th).

Two gates, in order: a per-process semaphore (so one process never has more
waiters asking the store than the cap), then a shared slot in the store (a
lease with a TTL, renewed while the call runs, so a dead process's slot frees
itself). Requests over the cap queue, first come first served, for at most
`server.slot_wait` seconds, then get 503 `upstream_busy` with Retry-After.
While the store is unreachable only the per-process cap applies, at once
(`Reachability`: calls do not each wait out the store's timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from authproxy.errors import StoreUnavailable, UpstreamBusy
from authproxy.models import TokenKey
from authproxy.store import TokenStore
from authproxy.store.reachability import Reachability

log = logging.getLogger("authproxy.slots")
LEASE_TTL = 15.0  # how long a slot outlives a process that died holding it
POLL_FIRST, POLL_MAX = 0.005, 0.05
#: the slot of a call without a cap (reusable: it holds nothing)
NO_SLOT: AbstractAsyncContextManager[None] = nullcontext()


class CallSlots:
    def __init__(self, store: TokenStore, wait: float = 30.0, lease_ttl: float = LEASE_TTL) -> None:
        self.store = store
        self.wait = wait
        self.lease_ttl = lease_ttl
        self._semaphores: dict[TokenKey, asyncio.Semaphore] = {}
        self.reachability = Reachability("call slots")

    async def close(self) -> None:
        await self.reachability.close()

    def slot(self, key: TokenKey, limit: int | None) -> AbstractAsyncContextManager[None]:
        """A call slot of `key` while the call runs; `limit` None: no cap, nothing to take."""
        return NO_SLOT if limit is None else self._slot(key, limit)

    @asynccontextmanager
    async def _slot(self, key: TokenKey, limit: int) -> AsyncIterator[None]:
        deadline = asyncio.get_running_loop().time() + self.wait
        semaphore = self._semaphores.setdefault(key, asyncio.Semaphore(limit))
        try:
            async with asyncio.timeout_at(deadline):
                await semaphore.acquire()
        except TimeoutError:
            raise self._busy(key, limit) from None
        try:
            lease = await self._shared(key, limit, deadline)
            if lease is None:
                yield
                return
            renewing = asyncio.create_task(self._renew(key, lease))
            try:
                yield
            finally:
                renewing.cancel()
                await asyncio.shield(self._release(key, lease))
        finally:
            semaphore.release()

    async def _shared(self, key: TokenKey, limit: int, deadline: float) -> str | None:
        """A lease on one of the store's slots, asking again with short pauses.

        None when the store is unreachable: the call goes ahead under this
        process's cap only (a 429 now and then beats failing every call)."""
        if self.reachability.down:  # probed by releasing a lease nobody holds: harmless
            self.reachability.probe(functools.partial(self.store.release_slot, key, "probe"))
            return None
        loop = asyncio.get_running_loop()
        lease = secrets.token_hex(12)
        pause = POLL_FIRST
        try:
            while not await self.store.acquire_slot(key, lease, limit, self.lease_ttl):
                left = deadline - loop.time()
                if left <= 0:
                    raise self._busy(key, limit)
                await asyncio.sleep(min(pause * random.uniform(0.5, 1.0), left))
                pause = min(pause * 1.5, POLL_MAX)
        except StoreUnavailable:
            self.reachability.failed()
            log.warning("call slots of %s unavailable (store unreachable): capping per process only", key)
            return None
        except BaseException:
            await asyncio.shield(self._release(key, lease))  # leave the queue
            raise
        return lease

    async def _renew(self, key: TokenKey, lease: str) -> None:
        """Keep a long call's lease alive (a stream may outlast LEASE_TTL)."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                if not await self.store.renew_slot(key, lease, self.lease_ttl):
                    log.warning("the call slot of %s expired while in use", key)
                    return
            except StoreUnavailable:
                log.warning("could not renew the call slot of %s (store unavailable)", key)

    async def _release(self, key: TokenKey, lease: str) -> None:
        with contextlib.suppress(StoreUnavailable):  # the lease expires by itself
            await self.store.release_slot(key, lease)

    def _busy(self, key: TokenKey, limit: int) -> UpstreamBusy:
        return UpstreamBusy(
            f"{key} already has {limit} calls in flight (the platform's limit per token) "
            f"and none finished within {self.wait:g}s",
            retry_after=1,
        )
