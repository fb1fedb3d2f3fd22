"""Faults around a refresh, with real processes and a real redis-server (issue 8):

- Redis killed while Shopee's answer to a refresh is on its way, down for 3 s and
  for 30 s, then back with what it had (AOF): the process that got the new pair
  keeps it and serves it, writes it back once Redis answers, and the other
  process never presents the spent refresh token meanwhile.
- The lock holder SIGKILLed mid-refresh: a waiter takes over when the holder's
  lock expires, not a full lock_ttl after it started waiting.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from authproxy.errors import StoreUnavailable
from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.store.redis import RedisStore
from tests.conftest import url_of
from tests.integration.test_shopee_kit import APP, KEY, PARTNER_ID, SHOP
from tests.procs import SharedRedis, proxy_processes
from tests.redis_server import RedisServer, redis_server_in

GET_SHOP = f"/{APP}/{SHOP}/api/v2/shop/get_shop_info"


async def _until(condition, seconds: float, what: str) -> None:
    """Poll an async condition (the processes change state outside the test), bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await condition():
        assert loop.time() < deadline, f"not within {seconds}s: {what}"
        await asyncio.sleep(0.05)


async def _status(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as reply:
        return reply.status, reply.headers.get("X-AuthProxy-Error", "")


@pytest.fixture
def aof_redis(tmp_path: Path):
    directory = tmp_path / "redis"
    directory.mkdir()
    server = redis_server_in(directory, persistent=True)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("outage", [3.0, 30.0])
async def test_a_pair_answered_while_redis_is_down_is_kept_and_written_back(
    serve, tmp_path, aof_redis: RedisServer, outage: float
):
    sandbox = ShopeeSandbox(PARTNER_ID, KEY)  # the system clock, as the processes use
    base = url_of(await serve(sandbox.app()))
    apps = {APP: {"platform": "shopee", "base_url": base, "partner_id": PARTNER_ID, "partner_key": KEY}}
    shared = SharedRedis(aof_redis.url)
    store = RedisStore.from_url(shared.url, shared.prefix)
    key = TokenKey(APP, SHOP)
    pair = sandbox.mint(SHOP)
    now = time.time()
    spent = pair["refresh_token"]
    expired = Token(pair["access_token"], now - 1, now - 14400, spent)  # the next call must refresh
    await store.put(key, TokenRecord(token=expired), expected_version=0)
    server = {"lock_ttl": 5.0, "token_timeout": 4.0, "token_cache_seconds": 0.0}
    try:
        async with (
            proxy_processes(apps, shared, tmp_path, count=2, server=server) as (holder, other),
            aiohttp.ClientSession() as session,
        ):
            sandbox.knobs.token_hang = True
            refreshing = asyncio.create_task(_status(session, holder.url + GET_SHOP))
            await _until(_async(lambda: sandbox.stats.token_calls == 1), 20, "the refresh reaches Shopee")
            aof_redis.kill()  # Redis dies while Shopee's answer is on its way
            sandbox.knobs.token_hang = False
            sandbox.hang.set()
            assert await refreshing == (200, "")  # served with the new pair the process keeps
            assert spent not in sandbox.book.refresh  # Shopee has spent the old refresh token
            loop = asyncio.get_running_loop()
            back_at = loop.time() + outage
            while loop.time() < back_at:  # traffic on both processes all through the outage
                assert await _status(session, holder.url + GET_SHOP) == (200, "")
                assert await _status(session, other.url + GET_SHOP) == (503, "store_unavailable")
                await asyncio.sleep(0.2)  # the pace of the traffic, not a synchronisation
            aof_redis.start()  # back, with the spent pair still in it
            followers = [asyncio.create_task(_status(session, other.url + GET_SHOP)) for _ in range(5)]

            async def written_back() -> bool:
                try:
                    record = await store.get(key)
                except StoreUnavailable:  # the test's own pooled connection died with Redis
                    return False
                fresh = record is not None and record.token is not None
                return fresh and record.token.refresh_token in sandbox.book.refresh

            await _until(written_back, 15, "the kept pair is in the store")
            assert [await f for f in followers] == [(200, "")] * 5
            for proxy in (holder, other):
                assert await _status(session, proxy.url + GET_SHOP) == (200, "")
            record = await store.get(key)
            assert record is not None and record.status is TokenStatus.OK and not record.spending
            assert "keeping it in this process" in holder.log()
    finally:
        await store.close()
    assert sandbox.stats.reused_refresh_tokens == 0
    assert sandbox.stats.presented_refresh_tokens.count(spent) == 1  # never presented again


async def test_waiters_take_over_when_a_killed_holders_lock_expires(serve, shared_redis, tmp_path):
    lock_ttl = 6.0
    sandbox = SellerCenterSandbox({"app-1": "secret-1"})
    base = url_of(await serve(sandbox.app()))
    apps = {
        "gfg": {
            "platform": "sellercenter",
            "base_url": base,
            "client_id": "app-1",
            "client_secret": "secret-1",
        }
    }
    server = {"lock_ttl": lock_ttl, "token_timeout": 5.0}
    async with (
        proxy_processes(apps, shared_redis, tmp_path, count=2, server=server) as (holder, waiter),
        aiohttp.ClientSession() as session,
    ):
        sandbox.knobs.token_hang = True
        doomed = asyncio.create_task(_status(session, holder.url + "/gfg/s1/v2/orders"))
        await _until(_async(lambda: sandbox.stats.token_calls == 1), 20, "the holder calls the endpoint")
        locked_at = time.monotonic()  # the holder took the lock just before this call
        await asyncio.sleep(0.7 * lock_ttl)  # a client arrives late in the lock's life
        waiting = asyncio.create_task(_status(session, waiter.url + "/gfg/s1/v2/orders"))
        await asyncio.sleep(0.5)  # it is queued behind the lock (pace, not synchronisation)
        holder.process.kill()  # the holder dies mid-refresh
        sandbox.knobs.token_hang = False
        sandbox.hang.set()
        assert await waiting == (200, "")
        took = time.monotonic() - locked_at
        with pytest.raises(aiohttp.ClientError):
            await doomed
    # the lock expires lock_ttl after it was taken; the waiter then needs one token call.
    # Waiting a full lock_ttl from its own start would have taken ~1.7 x lock_ttl.
    assert took < 1.35 * lock_ttl, took
    assert sandbox.stats.token_calls == 2


def _async(predicate):
    async def check() -> bool:
        return bool(predicate())

    return check
