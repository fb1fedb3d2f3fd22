"""Writing a new token pair, and keeping it when the store cannot take it (rule 5).

A pair the platform has just issued may exist nowhere else: Shopee has spent
the refresh token it replaced. `save` writes it by compare-and-set on the
version read under the lock. When that meets another write, the store's
record decides: if it still holds a credential of this pair's chain (the one
spent, or this pair itself after a retried write landed unseen, or a
`needs_reauthorization` mark made by a worker that presented the spent token),
the pair is written over it; if it holds another credential (the shop was
authorized anew), that record wins.

When the store cannot take the pair (unreachable, or a write the replicas did
not confirm: WriteUnconfirmed, after WAIT), the pair is *kept*: this process
serves it (and renews it from its own refresh token, which nobody else knows),
and a background task writes it back with backoff - by compare-and-set over any
record of its chain, so also over what a failover left behind - until the store
takes it with the replicas confirming, or the process dies. The
refresh lock is released only then. What remains: a process killed between
the platform's answer and a successful write loses the pair.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from authproxy.errors import StoreUnavailable, WriteUnconfirmed
from authproxy.models import TokenKey, TokenRecord
from authproxy.store import StoreLock, TokenStore

log = logging.getLogger("authproxy.tokens")
#: pauses between write-back attempts: first, cap (seconds, jittered)
WRITE_BACK_FIRST, WRITE_BACK_MAX = 0.05, 1.0
#: compare-and-set rounds lost to other writers before a save counts as failed
SETTLE_ROUNDS = 3

#: told each record a write-back stored (or the newer record that superseded it)
StoredListener = Callable[[TokenKey, TokenRecord], None]


@dataclass
class Kept:
    """A pair the store has not taken yet."""

    record: TokenRecord
    chain: set[str | None]  # refresh credentials this pair's chain has spent
    lock: StoreLock | None
    since: float = field(default_factory=lambda: asyncio.get_running_loop().time())

    def renewed(self, record: TokenRecord) -> None:
        """This process refreshed the kept pair itself: keep the newer one."""
        previous = self.record.token
        self.chain.add(previous.refresh_token if previous else None)
        self.record = record


class Keeper:
    def __init__(
        self,
        store: TokenStore,
        on_stored: StoredListener,
        on_unconfirmed: Callable[[TokenKey], None] = lambda key: None,
        on_released: Callable[[str], None] = lambda owner: None,
    ) -> None:
        self.store = store
        self.on_stored = on_stored
        self.on_unconfirmed = on_unconfirmed  # told each write the replicas did not confirm
        self.on_released = on_released  # told the owner of each lock released here
        self._kept: dict[TokenKey, Kept] = {}
        self._writers: dict[TokenKey, asyncio.Task[None]] = {}

    def kept(self, key: TokenKey) -> Kept | None:
        return self._kept.get(key)

    def holds(self, lock: StoreLock) -> bool:
        """Whether a kept pair owns `lock` (it is released when the pair is stored)."""
        return any(kept.lock is lock for kept in self._kept.values())

    async def save(
        self, key: TokenKey, record: TokenRecord, read: TokenRecord | None, lock: StoreLock | None
    ) -> TokenRecord:
        """Write a new pair; returns the record now current (this one, or a newer one)."""
        spent = read.token.refresh_token if read is not None and read.token is not None else None
        kept = Kept(record, {spent}, lock)
        try:
            version = await self.store.put(
                key, record, expected_version=read.version if read else 0, durable=True
            )
            if version is not None:
                return dataclasses.replace(record, version=version)
            return await self._settle(key, record, kept.chain)
        except StoreUnavailable as exc:
            self._keep(key, kept, exc)
            return record

    async def _settle(self, key: TokenKey, record: TokenRecord, chain: set[str | None]) -> TokenRecord:
        """Write `record` over whatever credential of its chain the store holds."""
        for _ in range(SETTLE_ROUNDS):
            latest = await self.store.get(key)
            if _superseded(latest, record, chain):
                assert latest is not None
                log.warning("token for %s changed while refreshing; keeping the stored one", key)
                return latest
            expected = latest.version if latest is not None else 0
            version = await self.store.put(key, record, expected_version=expected, durable=True)
            if version is not None:
                return dataclasses.replace(record, version=version)
        raise StoreUnavailable(f"the record of {key} kept changing under a write")

    def _keep(self, key: TokenKey, kept: Kept, reason: Exception) -> None:
        if isinstance(reason, WriteUnconfirmed):
            self.on_unconfirmed(key)
            log.error(
                "the new token for %s is on the Redis master but not confirmed by its replicas (%s); "
                "keeping it in this process and writing it again until a replica confirms it",
                key,
                reason,
            )
        else:
            log.error(
                "could not store the new token for %s (%s); keeping it in this process "
                "and writing it back when the store takes it",
                key,
                type(reason).__name__,
            )
        self._kept[key] = kept
        if key not in self._writers:
            writer = asyncio.create_task(self._write_back(key))
            self._writers[key] = writer
            writer.add_done_callback(lambda _: self._writers.pop(key, None))

    async def _write_back(self, key: TokenKey) -> None:
        pause = WRITE_BACK_FIRST
        while True:
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))
            kept = self._kept[key]
            record = kept.record
            try:
                stored = await self._settle(key, record, kept.chain)
            except WriteUnconfirmed:
                self.on_unconfirmed(key)
                pause = min(pause * 2, WRITE_BACK_MAX)
                continue
            except StoreUnavailable:
                pause = min(pause * 2, WRITE_BACK_MAX)
                continue
            if kept.record is not record:
                pause = WRITE_BACK_FIRST  # renewed while writing: the stored one is spent already
                continue
            del self._kept[key]
            waited = asyncio.get_running_loop().time() - kept.since
            log.warning("stored the kept token for %s after %.1fs", key, waited)
            self.on_stored(key, stored)
            if kept.lock is not None:
                await kept.lock.release()
                self.on_released(kept.lock.owner)
            return

    async def drain(self, timeout: float) -> None:
        """At shutdown: give write-backs `timeout` seconds, then say what is lost."""
        if self._writers:
            await asyncio.wait(list(self._writers.values()), timeout=timeout)
        for key in self._kept:
            log.error("shutting down with the token of %s not stored: it is lost", key)
        for writer in self._writers.values():
            writer.cancel()


def _superseded(latest: TokenRecord | None, record: TokenRecord, chain: set[str | None]) -> bool:
    """Whether the store holds a credential this pair's chain did not come from."""
    if latest is None or latest.token is None:
        return False
    ours = record.token.refresh_token if record.token else None
    return latest.token.refresh_token not in chain | {ours}
