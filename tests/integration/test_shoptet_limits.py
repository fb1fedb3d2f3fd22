"""Shoptet's limits: 3 concurrent connections per API token, 5 valid API tokens per e-shop.

The sandbox enforces both (429 for a 4th connection; a 6th token refused or
evicting the oldest) and counts how close we came; these tests show authproxy
shares one API token per shop and never needs the 429s.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from authproxy.models import TokenKey
from authproxy.runtime import RUNTIME
from tests.integration.test_shoptet_proxy import shoptet_world

SLOW = "/shop/eshop/api/orders/slow?seconds=0.02"


async def test_concurrent_calls_share_one_token_and_three_connections(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    client = await proxy_client(world.settings, stores.make(), clock)
    replies = await asyncio.gather(*(client.get(SLOW) for _ in range(40)))
    assert [r.status for r in replies] == [200] * 40
    stats = world.sandbox.stats
    assert stats.token_calls == 1
    assert stats.max_concurrent_per_token == 3, "the cap is used, never exceeded"
    assert stats.too_many_connections == 0


async def test_two_proxies_on_one_store_share_the_token_and_the_cap(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    proxies = [await proxy_client(world.settings, stores.make(), clock) for _ in range(2)]
    replies = await asyncio.gather(*(proxies[i % 2].get(SLOW) for i in range(60)))
    assert [r.status for r in replies] == [200] * 60
    stats = world.sandbox.stats
    assert (stats.token_calls, stats.too_many_connections) == (1, 0)
    assert stats.max_concurrent_per_token <= 3
    assert len({(await r.json())["headers"]["shoptet-access-token"] for r in replies}) == 1


async def test_hours_of_traffic_stay_far_from_five_tokens(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    proxies = [await proxy_client(world.settings, stores.make(), clock) for _ in range(2)]
    for minute in range(0, 180, 3):  # three hours, a burst every three minutes
        if minute % 45 == 0:
            world.sandbox.book.expire_all()  # Shoptet drops our token early now and then
        replies = await asyncio.gather(*(proxies[i % 2].get("/shop/eshop/api/orders") for i in range(10)))
        assert [r.status for r in replies] == [200] * 10
        await _background_refreshes_done(proxies)
        clock.advance(180)
    stats = world.sandbox.stats
    assert 7 <= stats.token_calls <= 12, stats.token_calls  # one per ~27 min, one per drop
    assert stats.max_valid_tokens <= 2
    assert stats.refused_tokens == 0


async def _background_refreshes_done(proxies):
    """Let proactive refreshes started by the burst finish before time moves on."""
    for proxy in proxies:
        flights = list(proxy.server.app[RUNTIME].apps["shop"].tokens._flights.values())
        await asyncio.gather(*flights, return_exceptions=True)


async def test_the_sandbox_enforces_five_valid_tokens(serve, clock):
    world = await shoptet_world(serve, clock)
    url = world.base + "/action/ApiOAuthServer/getAccessToken"
    bearer = {"Authorization": f"Bearer {world.oauth}"}
    async with aiohttp.ClientSession() as session:
        tokens = []
        for method in ["GET", "POST", "GET", "GET", "GET"]:
            async with session.request(method, url, headers=bearer) as reply:
                assert reply.status == 200
                tokens.append((await reply.json())["access_token"])
        async with session.get(url, headers=bearer) as reply:
            assert reply.status == 429
            assert (await reply.json())["error"] == "too_many_tokens"
        world.sandbox.knobs.token_limit = "evict"
        async with session.get(url, headers=bearer) as reply:
            assert reply.status == 200
        async with session.get(
            world.base + "/api/eshop", headers={"Shoptet-Access-Token": tokens[0]}
        ) as reply:
            assert reply.status == 401
            assert (await reply.json())["errors"][0]["message"] == "Invalid access token."
        clock.advance(1800)
        async with session.get(url, headers=bearer) as reply:
            assert reply.status == 200, "expired tokens no longer count"
    assert world.sandbox.stats.refused_tokens == 1


async def test_a_fourth_connection_on_one_token_is_retried_once_then_passed_through(
    serve, proxy_client, stores, clock
):
    world = await shoptet_world(serve, clock)
    client = await proxy_client(world.settings, stores.make(), clock)
    token = (await (await client.get("/shop/eshop/api/eshop")).json())["headers"]["shoptet-access-token"]
    async with aiohttp.ClientSession() as session:  # someone else using our token directly
        holders = [
            asyncio.create_task(
                session.get(world.base + "/api/orders/held", headers={"Shoptet-Access-Token": token})
            )
            for _ in range(3)
        ]
        while world.sandbox.inflight.get(token, 0) < 3:
            await asyncio.sleep(0.001)
        reply = await client.get("/shop/eshop/api/eshop")
        world.sandbox.held.set()
        # refused at the gate: sent once more after a second's rest, refused again, passed through
        assert reply.status == 429 and "X-AuthProxy-Error" not in reply.headers
        assert reply.headers["X-AuthProxy-Retried"] == "1" and reply.headers["Retry-After"] == "1"
        for answer in await asyncio.gather(*holders):
            assert answer.status == 200
            answer.release()
    assert world.sandbox.stats.too_many_connections == 2
    assert world.sandbox.stats.token_calls == 1


async def test_a_full_cap_for_too_long_answers_upstream_busy(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock, slot_wait=0.05)
    store = stores.make()
    for i in range(3):  # three calls in flight in other processes
        assert await store.acquire_slot(TokenKey("shop", "eshop"), f"elsewhere-{i}", 3, 30)
    client = await proxy_client(world.settings, store, clock)
    reply = await client.get("/shop/eshop/api/eshop")
    problem = await reply.json()
    assert reply.status == 503 and reply.headers["Retry-After"] == "1"
    assert problem["code"] == "upstream_busy" and reply.headers["X-AuthProxy-Error"] == "upstream_busy"
    assert world.sandbox.stats.api_calls == 0


@pytest.mark.parametrize("limit", ["refuse", "evict"])
async def test_either_sixth_token_behaviour_is_survivable(serve, proxy_client, stores, clock, limit):
    """If something else used up the 5 tokens, authproxy still answers (UNVERIFIED which way)."""
    world = await shoptet_world(serve, clock, backoff_base=60)
    world.sandbox.knobs.token_limit = limit
    for _ in range(5):
        world.sandbox.book.issue_access("222651-a")
    for token in list(world.sandbox.book.access):
        world.sandbox.owners[token] = 222651
    client = await proxy_client(world.settings, stores.make(), clock)
    reply = await client.get("/shop/eshop/api/eshop")
    if limit == "evict":
        assert reply.status == 200
    else:
        assert reply.status == 502 and reply.headers["X-AuthProxy-Error"] == "refresh_failed"
        problem = await reply.json()
        assert "too_many_tokens" in problem["detail"]
        again = await client.get("/shop/eshop/api/eshop")
        assert again.status == 502 and world.sandbox.stats.token_calls == 1, "backs off, no hammering"
