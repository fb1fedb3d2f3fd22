"""Two `authproxy serve` processes, one Redis, Shopee's single-use refresh tokens.

Every expiry cycle makes both processes meet `invalid_acceess_token` at once;
between them they must renew the pair exactly once, never present a refresh
token twice (that would lock the shop out on real Shopee), and answer every
request 200 after at most one replay.
"""

from __future__ import annotations

import asyncio

import aiohttp

from authproxy.sandbox.shopee import ShopeeSandbox
from tests.integration.test_shopee_kit import APP, KEY, PARTNER_ID, SHOP
from tests.procs import proxy_processes

CYCLES = 50
PER_CYCLE = 16


async def _fire(session: aiohttp.ClientSession, urls: list[str], count: int) -> list[int | str]:
    """`count` concurrent calls, GET and POST on each process; non-200 answers kept whole."""

    async def one(i: int) -> int | str:
        post = (i // len(urls)) % 2 == 1
        path = "/api/v2/product/add_item" if post else "/api/v2/shop/get_shop_info"
        url = f"{urls[i % len(urls)]}/{APP}/{SHOP}{path}"
        body = b'{"item_name": "kopi"}' if post else None
        headers = {"Content-Type": "application/json"} if post else {}
        async with session.request("POST" if post else "GET", url, data=body, headers=headers) as reply:
            text = await reply.text()
            return 200 if reply.status == 200 else f"{reply.status} {text[:300]}"

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_two_processes_50_expiry_cycles_never_reuse_a_refresh_token(serve, shared_redis, tmp_path):
    sandbox = ShopeeSandbox(PARTNER_ID, KEY)  # the system clock: the processes use theirs
    upstream = await serve(sandbox.app())
    base = str(upstream.make_url("")).rstrip("/")
    seed = sandbox.mint(SHOP)["refresh_token"]
    apps = {
        APP: {
            "platform": "shopee",
            "base_url": base,
            "partner_id": PARTNER_ID,
            "partner_key": KEY,
            "shops": {SHOP: {"refresh_token": seed}},
        }
    }
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        proxy_processes(apps, shared_redis, tmp_path, count=2) as procs,
        aiohttp.ClientSession(connector=connector) as session,
    ):
        urls = [p.url for p in procs]
        assert await _fire(session, urls, PER_CYCLE) == [200] * PER_CYCLE  # first pair from the seed
        for cycle in range(CYCLES):
            async with session.post(base + "/_sandbox/expire") as expired:
                assert expired.status == 200
            statuses = await _fire(session, urls, PER_CYCLE)
            assert statuses == [200] * PER_CYCLE, (cycle, statuses)
    stats = sandbox.stats
    assert stats.reused_refresh_tokens == 0
    assert stats.token_calls == CYCLES + 1  # the seed, then exactly one renewal per expiry
    assert len(stats.presented_refresh_tokens) == CYCLES + 1
