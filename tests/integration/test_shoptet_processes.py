"""Two `authproxy serve` processes on one Redis, in front of one Shoptet e-shop.

Shoptet counts API tokens per e-shop (at most 5 valid) and connections per
token (at most 3, else 429), whichever replica they come from.
"""

from __future__ import annotations

import asyncio

import aiohttp

from authproxy.sandbox.shoptet import ShoptetSandbox
from tests.procs import proxy_processes


async def _fire(urls: list[str], path: str, count: int) -> list[tuple[int, str]]:
    """(status, API token the sandbox saw) of `count` concurrent calls over the processes."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> tuple[int, str]:
            async with session.get(urls[i % len(urls)] + path) as reply:
                body = await reply.json() if reply.content_type == "application/json" else {}
                return reply.status, (body.get("headers") or {}).get("shoptet-access-token", "")

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_two_processes_share_one_token_and_three_connections(serve, shared_redis, tmp_path):
    sandbox = ShoptetSandbox()
    upstream = await serve(sandbox.app())
    base = str(upstream.make_url("")).rstrip("/")
    oauth = sandbox.seed_oauth_token()
    apps = {
        "shop": {
            "platform": "shoptet",
            "base_url": base,
            "auth_url": base,
            "shops": {"eshop": {"oauth_access_token": oauth}},
        }
    }
    async with proxy_processes(apps, shared_redis, tmp_path, count=2) as procs:
        urls = [p.url for p in procs]
        results = await _fire(urls, "/shop/eshop/api/orders/slow?seconds=0.03", 200)
        assert [status for status, _ in results] == [200] * 200, sorted({s for s, _ in results})
        assert len({token for _, token in results}) == 1, "one API token for both processes"
        stats = sandbox.stats
        assert (stats.token_calls, stats.api_calls, stats.too_many_connections) == (1, 200, 0)
        assert stats.max_concurrent_per_token == 3, "the cap is shared, used, and never exceeded"

        for _ in range(5):  # Shoptet drops the token: one new one per drop, whoever sees it first
            sandbox.book.expire_all()
            results = await _fire(urls, "/shop/eshop/api/orders", 40)
            assert [status for status, _ in results] == [200] * 40
    assert stats.token_calls == 6
    assert stats.getaccesstoken_methods == ["GET"] * 6
    assert stats.presented_refresh_tokens == [oauth] * 6
    assert stats.max_valid_tokens == 1
    assert (stats.max_concurrent_per_token, stats.too_many_connections) == (3, 0)
