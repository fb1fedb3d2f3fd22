"""The TokenStore contract, on every backend."""

from __future__ import annotations

import asyncio
import dataclasses

from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus
from authproxy.store import ANY_VERSION

KEY = TokenKey("app", "merchant:42")


def record(access: str = "a", refresh: str | None = "r") -> TokenRecord:
    token = Token(
        access_token=access, expires_at=2e9, obtained_at=1e9, refresh_token=refresh, extra={"c": "1"}
    )
    return TokenRecord(token=token, last_refresh=1e9)


async def test_compare_and_set(stores):
    store = stores.make()
    assert await store.get(KEY) is None
    assert await store.put(KEY, record("a"), expected_version=0) == 1
    assert await store.put(KEY, record("b"), expected_version=0) is None  # exists already
    assert await store.put(KEY, record("b"), expected_version=1) == 2
    assert await store.put(KEY, record("c"), expected_version=1) is None  # stale version
    got = await store.get(KEY)
    assert got is not None and got.version == 2 and got.token.access_token == "b"
    assert got.token.extra == {"c": "1"} and got.token.refresh_token == "r"
    assert await store.put(KEY, record("d"), expected_version=ANY_VERSION) == 3
    marked = dataclasses.replace(record("d"), status=TokenStatus.NEEDS_REAUTHORIZATION, last_error="why")
    assert await store.put(KEY, marked, expected_version=3) == 4
    got = await store.get(KEY)
    assert got.status is TokenStatus.NEEDS_REAUTHORIZATION and got.last_error == "why"
    assert await store.keys() == [KEY]
    assert await store.delete(KEY) is True
    assert await store.get(KEY) is None and await store.delete(KEY) is False


async def test_lock_is_exclusive_and_released_only_by_its_owner(stores):
    store = stores.make()
    first, second = store.lock(KEY, 5), store.lock(KEY, 5)
    assert await first.acquire()
    assert not await second.acquire()
    await second.release()  # not the owner: must not free it
    assert not await store.lock(KEY, 5).acquire()
    await first.release()
    assert await second.acquire()
    await second.release()


async def test_lock_expires_after_its_ttl(stores):
    store = stores.make()
    assert await store.lock(KEY, 0.05).acquire()
    waiter = store.lock(KEY, 5)
    for _ in range(200):  # bounded: the TTL is 50 ms
        if await waiter.acquire():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the lock never expired")


async def test_wait_for_change(stores):
    store = stores.make()
    await store.put(KEY, record("a"), expected_version=0)
    assert await store.wait_for_change(KEY, 1, 0.05) is False
    waiting = asyncio.ensure_future(store.wait_for_change(KEY, 1, 5))
    await asyncio.sleep(0)
    await store.put(KEY, record("b"), expected_version=1)
    assert await waiting is True
    assert await store.wait_for_change(KEY, 1, 5) is True  # already moved on


async def test_ping(stores):
    await stores.make().ping()
