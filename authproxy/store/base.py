"""What every token store implements (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from authproxy.models import TokenKey, TokenRecord

ANY_VERSION = -1
#: a slot waiter that has not asked again for this long loses its place in the queue
SLOT_WAITER_TTL = 2.0


@dataclass(frozen=True)
class RawRecord:
    """A record as the Redis store holds it: codec.py's JSON, secrets sealed or plain."""

    key: TokenKey
    version: int
    data: bytes


class StoreLock(Protocol):
    """One attempt at a lock: a fresh object, a random owner, a TTL."""

    owner: str
    #: after a failed acquire: seconds until the holder's lock expires, and its owner
    holder_ttl: float
    holder: str

    async def acquire(self) -> bool: ...

    async def release(self) -> None: ...


class TokenStore(Protocol):
    async def get(self, key: TokenKey) -> TokenRecord | None: ...

    async def put(
        self, key: TokenKey, record: TokenRecord, *, expected_version: int, durable: bool = False
    ) -> int | None:
        """Write if the stored version is `expected_version` (0: absent,
        ANY_VERSION: whatever it is). Returns the new version, or None.

        `durable` (a new token pair, which exists nowhere else): ride out a short
        outage by retrying as the store's write-retry policy says, then raise
        StoreUnavailable. A retried write whose first attempt landed unseen
        answers None (the version moved): the caller reads to find out.
        A durable write the master took but fewer replicas than the store's
        `wait_replicas` confirmed raises WriteUnconfirmed (a StoreUnavailable)."""

    async def mark_spending(self, key: TokenKey, version: int, owner: str) -> bool:
        """Set the record's `spending` owner if its version is still `version`
        (0: absent); the next put clears it. False when the version moved."""

    async def delete(self, key: TokenKey) -> bool: ...

    async def keys(self) -> list[TokenKey]: ...

    def lock(self, key: TokenKey, ttl: float, owner: str | None = None) -> StoreLock:
        """An attempt at the key's lock; `owner`: as that owner (to release a lock of ours)."""

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
