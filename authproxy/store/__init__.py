"""Token stores: Redis for production (any number of processes), memory for one.

Every store keeps a versioned `TokenRecord` per (app, shop), writes it with
compare-and-set (which also clears the record's `spending` mark), hands out
owner-token locks that tell a loser how long the holder has left, lets a
waiter block until a record's version moves on, and shares per-key call slots
(leases with a TTL) so a concurrency cap holds across processes. Connection
trouble is raised as StoreUnavailable.
"""

from __future__ import annotations

from authproxy.keyring import Keyring
from authproxy.settings import StoreSettings
from authproxy.store.base import ANY_VERSION, SLOT_WAITER_TTL, RawRecord, StoreLock, TokenStore
from authproxy.store.rates import MemoryRates, RateStore

__all__ = [
    "ANY_VERSION",
    "SLOT_WAITER_TTL",
    "RateStore",
    "RawRecord",
    "StoreLock",
    "TokenStore",
    "open_rates",
    "open_store",
]


def open_store(settings: StoreSettings, keyring: Keyring | None = None) -> TokenStore:
    """The store `settings.url` names: `memory://`, `redis://...`, `rediss://...`, `unix://...`,
    `redis+sentinel://...`, `redis+cluster://...` (store_address.py; connections: gateway.py).
    The Redis store seals secrets with `keyring`; the memory store keeps records as objects
    in this process (nothing is at rest), so it has no use for one."""
    if settings.url.startswith("memory://"):
        from authproxy.store.memory import MemoryStore

        return MemoryStore()
    from authproxy.store.redis import RedisStore

    return RedisStore.from_settings(settings, keyring)


def open_rates(store: TokenStore) -> RateStore:
    """The rate buckets beside a token store: on its Redis client and prefix, or in this process."""
    from authproxy.store.redis import RedisStore

    if isinstance(store, RedisStore):
        from authproxy.store.redis_rates import RedisRates

        return RedisRates(store.client, store.prefix)
    return MemoryRates()
