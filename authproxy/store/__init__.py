"""Token stores: Redis for production (any number of processes), memory for one.

Every store keeps a versioned `TokenRecord` per (app, shop), writes it with
compare-and-set, hands out owner-token locks, and lets a waiter block until a
record's version moves on. Connection trouble is raised as StoreUnavailable.
"""

from __future__ import annotations

from typing import Protocol

from authproxy.models import TokenKey, TokenRecord

ANY_VERSION = -1


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

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def open_store(url: str, prefix: str = "authproxy") -> TokenStore:
    """The store named by `url`: `memory://`, `redis://...`, `rediss://...`, `unix://...`."""
    if url.startswith("memory://"):
        from authproxy.store.memory import MemoryStore

        return MemoryStore()
    from authproxy.store.redis import RedisStore

    return RedisStore.from_url(url, prefix)
