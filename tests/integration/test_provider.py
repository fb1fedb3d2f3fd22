"""ShopTokens driven directly against the Shopee sandbox (rotating single-use refresh
tokens), on every store: the compare-and-set conflict branches, a store that cannot
take a new pair, and the `spending` mark a worker finds when it takes over."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from authproxy.errors import StoreUnavailable, WriteUnconfirmed
from authproxy.metrics import Metrics
from authproxy.models import FakeClock, Token, TokenKey, TokenRecord, TokenStatus
from authproxy.platforms.shopee import Shopee
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.settings import ServerSettings, ShopeeApp
from authproxy.store import ANY_VERSION, StoreLock, TokenStore
from authproxy.tokens import keeper
from authproxy.tokens.provider import ShopTokens
from tests.conftest import url_of

PARTNER_ID, KEY, SHOP = 2001887, "provider-test-key", "1000001"
LIFETIME = 14400.0


class FaultyStore:
    """A real store with a switch to make it unreachable, and a hook before puts.

    A fake, not a mock: every call that is not failed goes to the real store."""

    def __init__(self, inner: TokenStore) -> None:
        self.inner = inner
        self.down = False
        self.unconfirmed = False  # durable writes land, then "no replica confirmed" (WAIT)
        self.before_put: Callable[[], Awaitable[None]] | None = None

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("token store unreachable (test)")

    async def get(self, key: TokenKey) -> TokenRecord | None:
        self._check()
        return await self.inner.get(key)

    async def put(
        self, key: TokenKey, record: TokenRecord, *, expected_version: int, durable: bool = False
    ) -> int | None:
        if self.before_put is not None:
            hook, self.before_put = self.before_put, None
            await hook()
        self._check()
        version = await self.inner.put(key, record, expected_version=expected_version, durable=durable)
        if durable and self.unconfirmed and version is not None:
            raise WriteUnconfirmed("0 of 1 replicas confirmed the write")
        return version

    async def mark_spending(self, key: TokenKey, version: int, owner: str) -> bool:
        self._check()
        return await self.inner.mark_spending(key, version, owner)

    def lock(self, key: TokenKey, ttl: float, owner: str | None = None) -> StoreLock:
        return FaultyLock(self, self.inner.lock(key, ttl, owner))

    async def wait_for_change(self, key: TokenKey, version: int, timeout: float) -> bool:
        self._check()
        return await self.inner.wait_for_change(key, version, timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclasses.dataclass
class FaultyLock:
    store: FaultyStore
    inner: StoreLock
    released: bool = False

    @property
    def owner(self) -> str:
        return self.inner.owner

    @property
    def holder_ttl(self) -> float:
        return self.inner.holder_ttl

    @property
    def holder(self) -> str:
        return self.inner.holder

    async def acquire(self) -> bool:
        self.store._check()
        return await self.inner.acquire()

    async def release(self) -> None:
        self.released = True
        if not self.store.down:
            await self.inner.release()


@pytest.fixture
async def world(serve, stores, clock):
    sandbox = ShopeeSandbox(PARTNER_ID, KEY, clock=clock, lifetime=LIFETIME)
    base = url_of(await serve(sandbox.app()))
    settings = ShopeeApp(platform="shopee", base_url=base, partner_id=PARTNER_ID, partner_key=KEY)
    async with aiohttp.ClientSession() as session:
        store = FaultyStore(stores.make())

        def tokens(server: ServerSettings | None = None) -> ShopTokens:
            server = server or ServerSettings(token_cache_seconds=0)
            return ShopTokens("sp", Shopee(settings), store, session, server, clock, Metrics(clock))

        yield sandbox, store, tokens


async def seed(sandbox: ShopeeSandbox, store: TokenStore, clock: FakeClock) -> Token:
    pair = sandbox.mint(SHOP)
    token = Token(pair["access_token"], clock.now() + LIFETIME, clock.now(), pair["refresh_token"])
    await store.put(TokenKey("sp", SHOP), TokenRecord(token=token), expected_version=0)
    return token


async def test_a_conflicting_write_of_another_credential_wins_and_is_adopted(world, clock):
    sandbox, store, tokens = world
    old = await seed(sandbox, store, clock)
    clock.advance(LIFETIME + 1)
    other = dataclasses.replace(old, access_token="re-authorized", refresh_token="rt-new", expires_at=None)

    async def reauthorized_meanwhile() -> None:  # e.g. `authorize` ran while we refreshed
        await store.inner.put(TokenKey("sp", SHOP), TokenRecord(token=other), expected_version=ANY_VERSION)

    store.before_put = reauthorized_meanwhile
    provider = tokens()
    assert (await provider.current(SHOP)).access_token == "re-authorized"
    stored = await store.get(TokenKey("sp", SHOP))
    assert stored is not None and stored.token == other  # ours was not written over it
    assert sandbox.stats.token_calls == 1


async def test_a_conflicting_mark_on_the_spent_credential_is_written_over(world, clock):
    sandbox, store, tokens = world
    old = await seed(sandbox, store, clock)
    clock.advance(LIFETIME + 1)

    async def marked_meanwhile() -> None:  # a worker that presented the spent token marked the shop
        mark = TokenRecord(token=old, status=TokenStatus.NEEDS_REAUTHORIZATION, last_error="Invalid")
        await store.inner.put(TokenKey("sp", SHOP), mark, expected_version=ANY_VERSION)

    store.before_put = marked_meanwhile
    provider = tokens()
    new = await provider.current(SHOP)
    stored = await store.get(TokenKey("sp", SHOP))
    assert stored is not None and stored.status is TokenStatus.OK and stored.token == new
    assert new.refresh_token != old.refresh_token


async def test_a_pair_the_store_cannot_take_is_kept_served_renewed_and_written_back(world, clock, logs):
    sandbox, store, tokens = world
    old = await seed(sandbox, store, clock)
    provider = tokens()
    clock.advance(LIFETIME + 1)

    async def outage() -> None:
        store.down = True

    store.before_put = outage  # Redis goes away while the refresh answer is on its way
    first = await provider.current(SHOP)
    assert first.refresh_token != old.refresh_token
    assert "keeping it in this process" in logs.text()
    assert await provider.current(SHOP) == first  # served from what the process keeps
    clock.advance(LIFETIME + 1)  # it expires while the store is still down:
    second = await provider.current(SHOP)  # renewed from the kept refresh token
    assert second.refresh_token not in (old.refresh_token, first.refresh_token)
    store.down = False
    await asyncio.wait_for(_stored(store, second), timeout=10)
    assert sandbox.stats.reused_refresh_tokens == 0
    kept_lock = provider.keeper.kept(TokenKey("sp", SHOP))
    assert kept_lock is None  # written back: nothing kept any more
    clock.advance(LIFETIME + 1)
    third = await provider.current(SHOP)  # and the chain goes on from the stored pair
    assert third.refresh_token != second.refresh_token
    assert sandbox.stats.reused_refresh_tokens == 0


async def test_a_write_no_replica_confirmed_is_kept_counted_and_reasserted(world, clock, logs, monkeypatch):
    sandbox, store, tokens = world
    old = await seed(sandbox, store, clock)
    monkeypatch.setattr(keeper, "WRITE_BACK_MAX", 0.05)
    provider = tokens()
    clock.advance(LIFETIME + 1)
    store.unconfirmed = True  # the master takes the pair, its replica does not confirm it
    first = await provider.current(SHOP)
    assert first.refresh_token != old.refresh_token
    key = TokenKey("sp", SHOP)
    assert provider.keeper.kept(key) is not None
    assert "not confirmed by its replicas" in logs.text()
    counted = provider.metrics.registry.get_sample_value(
        "authproxy_store_unconfirmed_writes_total", {"app": "sp"}
    )
    assert counted is not None and counted >= 1
    landed = await store.get(key)
    assert landed is not None and landed.token == first  # on the master all along
    store.unconfirmed = False  # a replica is back: the next re-assertion is confirmed
    await asyncio.wait_for(_until(lambda: provider.keeper.kept(key) is None), timeout=10)
    confirmed = await store.get(key)
    assert confirmed is not None and confirmed.token == first and confirmed.version > landed.version
    assert sandbox.stats.reused_refresh_tokens == 0


async def test_a_rejected_refresh_serves_the_kept_pair_instead_of_marking_the_shop(world, clock, monkeypatch):
    """After a failover lost both the pair's write and the lock, a refresh from the stale
    record is rejected (its token was spent): the process keeps the newer pair, so it
    serves that one and does not mark the shop."""
    sandbox, store, tokens = world
    old = await seed(sandbox, store, clock)
    monkeypatch.setattr(keeper, "WRITE_BACK_FIRST", 3600.0)  # no write-back within this test
    provider = tokens()
    clock.advance(LIFETIME + 1)
    store.unconfirmed = True
    first = await provider.current(SHOP)
    key = TokenKey("sp", SHOP)
    kept = provider.keeper.kept(key)
    assert kept is not None and isinstance(kept.lock, FaultyLock)
    store.unconfirmed = False
    stale = TokenRecord(token=old)  # what the promoted replica holds: the spent pair, no lock
    await store.put(key, stale, expected_version=ANY_VERSION)
    await kept.lock.inner.release()
    seen = await store.get(key)
    assert seen is not None
    token = await provider.refresher.across_processes(SHOP, seen.version)
    assert token == first
    assert sandbox.stats.presented_refresh_tokens.count(old.refresh_token) == 2  # refused the 2nd time
    after = await store.get(key)
    assert after is not None and after.status is TokenStatus.OK  # not needs_reauthorization


async def test_the_lock_is_released_only_once_the_kept_pair_is_stored(world, clock, monkeypatch):
    sandbox, store, tokens = world
    await seed(sandbox, store, clock)
    monkeypatch.setattr(keeper, "WRITE_BACK_MAX", 0.05)
    provider = tokens()
    clock.advance(LIFETIME + 1)

    async def outage() -> None:
        store.down = True

    store.before_put = outage
    await provider.current(SHOP)
    kept = provider.keeper.kept(TokenKey("sp", SHOP))
    assert kept is not None and isinstance(kept.lock, FaultyLock) and not kept.lock.released
    store.down = False
    await asyncio.wait_for(_until(lambda: kept.lock.released), timeout=10)


async def test_a_foreign_spending_mark_makes_the_next_worker_wait_for_the_outcome(world, clock, monkeypatch):
    sandbox, store, tokens = world
    old = await seed(sandbox, store, clock)
    clock.advance(LIFETIME + 1)
    key = TokenKey("sp", SHOP)
    stored = await store.get(key)
    assert stored is not None
    assert await store.mark_spending(key, stored.version, "a-worker-whose-write-is-late")
    pair = sandbox.issue_pair([f"shop_id:{SHOP}"])  # what that worker got from Shopee
    late = Token(pair["access_token"], clock.now() + LIFETIME, clock.now(), pair["refresh_token"])
    provider = tokens()
    waiting = asyncio.create_task(provider.current(SHOP))
    await asyncio.wait_for(_until(lambda: _lock_waits(provider) > 0), timeout=10)  # it took the lock
    assert not waiting.done()  # and found the mark: it watches the record instead of refreshing
    await store.put(key, TokenRecord(token=late), expected_version=stored.version)  # the late write
    assert (await asyncio.wait_for(waiting, timeout=10)) == late
    assert sandbox.stats.token_calls == 0  # the old refresh token was never presented
    assert old.refresh_token not in sandbox.stats.presented_refresh_tokens


async def test_a_foreign_mark_with_nobody_behind_it_is_taken_over(world, clock, monkeypatch):
    from authproxy.tokens import refresh as refresh_module

    sandbox, store, tokens = world
    await seed(sandbox, store, clock)
    monkeypatch.setattr(refresh_module, "SPENDING_GRACE", 0.2)
    clock.advance(LIFETIME + 1)
    key = TokenKey("sp", SHOP)
    stored = await store.get(key)
    assert stored is not None and await store.mark_spending(key, stored.version, "a-dead-worker")
    token = await tokens().current(SHOP)
    assert sandbox.stats.token_calls == 1
    after = await store.get(key)
    assert after is not None and after.token == token and after.spending == ""  # the write cleared it


async def _stored(store: FaultyStore, token: Token) -> None:
    while True:
        record = await store.get(TokenKey("sp", SHOP))
        if record is not None and record.token == token:
            return
        await asyncio.sleep(0.02)  # polling the store for a condition, bounded by the caller


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.02)  # polling a condition, bounded by the caller


def _lock_waits(provider: ShopTokens) -> float:
    return provider.metrics.registry.get_sample_value("authproxy_lock_wait_seconds_count") or 0.0


async def test_a_released_lock_that_comes_back_with_a_failover_is_released_again(world, clock, logs):
    """A promoted replica may never have seen this process release the shop's lock: found
    holding it, the lock is released again at once, not waited out for its whole TTL."""
    sandbox, store, tokens = world
    await seed(sandbox, store, clock)
    provider = tokens(ServerSettings(token_cache_seconds=0, lock_ttl=600))
    clock.advance(LIFETIME + 1)
    first = await provider.current(SHOP)  # refreshed under the lock, which was then released
    (owner,) = provider.refresher._released
    assert await store.inner.lock(TokenKey("sp", SHOP), 600, owner).acquire(), "the failover's replica"
    clock.advance(LIFETIME + 1)
    async with asyncio.timeout(10):  # else the lock's 600 s
        second = await provider.current(SHOP)
    assert second.refresh_token != first.refresh_token and sandbox.stats.token_calls == 2
    assert "a lock this process had released was back" in logs.text()


async def test_another_owners_lock_is_not_taken(world, clock):
    sandbox, store, tokens = world
    await seed(sandbox, store, clock)
    held = store.inner.lock(TokenKey("sp", SHOP), 600)
    assert await held.acquire()
    assert await held.acquire(), "its owner again (a retry after a lost answer): still its own"
    provider = tokens(ServerSettings(token_cache_seconds=0, lock_ttl=600))
    attempt = store.inner.lock(TokenKey("sp", SHOP), 600)
    assert not await attempt.acquire() and attempt.holder == held.owner
    assert not await provider.refresher._acquire(TokenKey("sp", SHOP), attempt)


async def test_a_replay_does_not_get_the_refused_token_back_from_a_refresh_that_left_it(world, clock):
    """The platform refused the stored token while another process held the refresh lock;
    that refresh ended with the token unchanged (a failure mark). The replay's token is a
    new one, refreshed here, not the refused one (which would only pass the 403 on)."""
    sandbox, store, tokens = world
    refused = await seed(sandbox, store, clock)
    key = TokenKey("sp", SHOP)
    other = store.inner.lock(key, 20.0)  # another process is refreshing
    assert await other.acquire()
    waiting = asyncio.Event()
    wait_for_change = store.wait_for_change

    async def noticed(key: TokenKey, version: int, timeout: float) -> bool:
        waiting.set()  # the replay waits for the other process's outcome
        return await wait_for_change(key, version, timeout)

    store.wait_for_change = noticed  # type: ignore[method-assign]
    replay = asyncio.create_task(tokens().after_rejection(SHOP, refused))
    await waiting.wait()
    record = await store.inner.get(key)
    assert record is not None
    await store.inner.put(key, dataclasses.replace(record, failures=1), expected_version=record.version)
    await other.release()
    token = await replay
    assert token.access_token != refused.access_token
    assert sandbox.stats.token_calls == 1
