"""Token stores: Redis for production (any number of processes), memory for one.

Every store keeps a versioned `TokenRecord` per (app, shop), writes it with
compare-and-set, hands out owner-token locks, lets a waiter block until a
record's version moves on, and shares per-key call slots (leases with a TTL)
so a concurrency cap holds across processes. Connection trouble is raised as
StoreUnavailable.
"""

from __future__ import annotations

from typing import Protocol

from authproxy.models import TokenKey, TokenRecord

ANY_VERSION = -1
#: a slot waiter that has not asked again for this long loses its place in the queue
SLOT_WAITER_TTL = 2.0


class StoreLock(Protocol):
    """One attempt at a lock: a fresh object, a random owner, a TTL."""

    async def acquire(self) -> bool: ...

    async def release(self) -> None: ...


class TokenStore(Protocol):
    async def get(self, key: TokenKey) -> TokenRecord | None: ...

    async def put(self, key: TokenKey, record: TokenRecord, *, expected_version: int) -> int | None:
        """Write if the stored version is `expected_version` (0: absent,
        ANY_VERSION: whatever it is). Returns the new version, or None."""

    async def delete(self, key: TokenKey) -> bool: ...

    async def keys(self) -> list[TokenKey]: ...

    def lock(self, key: TokenKey, ttl: float) -> StoreLock: ...

    async def wait_for_change(self, key: TokenKey, version: int, timeout: float) -> bool:
        """Block until the record's version differs from `version` (True) or timeout."""

    async def acquire_slot(self, key: TokenKey, lease: str, limit: int, ttl: float) -> bool:
        """Take one of `limit` shared call slots for `key` as `lease`, held `ttl`
        seconds unless renewed; False when none is free. Expired leases (a dead
        process's) are dropped first. Waiters are served first come, first served:
        a lease that asked before and still waits keeps its place in the queue
        while it asks again within SLOT_WAITER_TTL seconds."""

    async def renew_slot(self, key: TokenKey, lease: str, ttl: float) -> bool:
        """Extend a held lease by `ttl` seconds from now; False when it had expired."""

    async def release_slot(self, key: TokenKey, lease: str) -> None:
        """Give the slot back (or leave the queue)."""

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def open_store(url: str, prefix: str = "authproxy") -> TokenStore:
    """The store named by `url`: `memory://`, `redis://...`, `rediss://...`, `unix://...`."""
    if url.startswith("memory://"):
        from authproxy.store.memory import MemoryStore

        return MemoryStore()
    from authproxy.store.redis import RedisStore

    return RedisStore.from_url(url, prefix)
