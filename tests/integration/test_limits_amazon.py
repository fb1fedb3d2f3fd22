"""Amazon SP-API usage plans: per seller and per application, learned from x-amzn-RateLimit-Limit.

Two proxies on one store serve three sellers hammering getOrder. The sandbox
enforces 4/s per seller and 10/s for the application (three sellers want 12),
then lowers one seller to 1/s mid-run. The proxies' own limits are the
config's (burst below the sandbox's); the lowered rate they learn from the
replies. Counts and times are the sandbox's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from authproxy.sandbox.amazon import AmazonSandbox
from authproxy.sandbox.limits import TokenBucket, most_in_window
from tests.conftest import settings_for, url_of

SELLERS = ("seller1", "seller2", "seller3")
OPERATION = "getOrder"
SELLER_RATE, APP_RATE, LOWERED = 4.0, 10.0, 1.0
SANDBOX_BURST = 8
WORKERS = 4


def amazon_app(
    base: str, seeds: dict[str, str], limits: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An [apps.X] table for the Amazon sandbox at `base` (client "cid"), one shop per seed."""
    app: dict[str, Any] = {
        "platform": "amazon",
        "base_url": base,
        "auth_url": base,
        "client_id": "cid",
        "client_secret": "csecret",
        "shops": {shop: {"refresh_token": seed} for shop, seed in seeds.items()},
    }
    if limits is not None:
        app["limits"] = limits
    return app


async def _world(serve: Any) -> tuple[AmazonSandbox, dict[str, str], Any]:
    sandbox = AmazonSandbox("cid", "csecret")
    sandbox.set_limit(OPERATION, SELLER_RATE, SANDBOX_BURST)
    sandbox.set_app_limit(OPERATION, APP_RATE, SANDBOX_BURST)
    base = url_of(await serve(sandbox.app()))
    seeds = {seller: sandbox.seed_refresh_token() for seller in SELLERS}
    app = amazon_app(
        base,
        seeds,
        [
            {"match": "GET /orders/v0/orders/*", "rate": SELLER_RATE, "burst": 2},
            {"match": "GET /orders/v0/orders/*", "rate": APP_RATE, "burst": 4, "scope": "app"},
        ],
    )
    return sandbox, seeds, settings_for({"amz": app}, max_queue_wait=10.0)


async def test_a_lowered_seller_limit_is_learned_and_the_app_limit_holds(serve, proxy_client, redis_stores):
    sandbox, seeds, settings = await _world(serve)
    proxies = [await proxy_client(settings, redis_stores.make()) for _ in range(2)]
    statuses: list[int] = []
    stop = asyncio.Event()

    async def worker(seller: str, n: int) -> None:
        i = 0
        while not stop.is_set():
            reply = await proxies[(n + i) % 2].get(f"/amz/{seller}/orders/v0/orders/902-{n}-{i}")
            statuses.append(reply.status)
            reply.release()
            i += 1

    workers = [asyncio.create_task(worker(s, n)) for s in SELLERS for n in range(WORKERS)]
    await _until(lambda: len(sandbox.arrivals.calls.get(f"{seeds['seller1']}|{OPERATION}", [])) >= 12)
    sandbox.set_limit(OPERATION, LOWERED, SANDBOX_BURST, seller=seeds["seller1"])
    lowered_at = sandbox.arrivals.clock()
    await _until(lambda: _after(sandbox, seeds["seller1"], lowered_at) >= 5)
    stop.set()
    await asyncio.gather(*workers)

    assert set(statuses) == {200}, "every call answered, none refused by the proxy or the platform"
    assert sandbox.app_throttled == 0, "the sellers together never went past the app's limit"
    every = [at for s in SELLERS for at, ok in sandbox.arrivals.calls[f"{seeds[s]}|{OPERATION}"] if ok]
    assert most_in_window(every, 1.0) <= APP_RATE + SANDBOX_BURST
    lowered = sandbox.arrivals.calls[f"{seeds['seller1']}|{OPERATION}"]
    exceeded = [at for at, ok in lowered if not ok and at >= lowered_at]
    assert len(exceeded) <= 2, f"{len(exceeded)} calls over the new limit"
    later = [at for at, ok in lowered if ok and at >= lowered_at]
    bucket = TokenBucket(LOWERED, SANDBOX_BURST)
    assert all(bucket.take(at) for at in later), "after the change the seller's calls fit 1/s"
    print(
        f"\nseller1 after the change: {len(later)} calls, {len(exceeded)} over the new limit; "
        f"busiest second of the app: {most_in_window(every, 1.0)} (limit {APP_RATE:g} + burst)"
    )


def _after(sandbox: AmazonSandbox, seed: str, moment: float) -> int:
    return sum(1 for at, ok in sandbox.arrivals.calls[f"{seed}|{OPERATION}"] if ok and at > moment)


async def _until(condition: Any, seconds: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            pytest.fail("the condition did not come true in time")
        await asyncio.sleep(0.02)


async def test_published_limits_and_the_rate_header(serve, proxy_client, stores):
    """Defaults from Amazon's usage plans: getOrders is 0.0167/s with a burst of 20 (19 used)."""
    sandbox = AmazonSandbox("cid", "csecret")
    base = url_of(await serve(sandbox.app()))
    app = amazon_app(base, {"s1": sandbox.seed_refresh_token()})
    client = await proxy_client(settings_for({"amz": app}, max_queue_wait=2.0), stores.make())
    replies = [await client.get("/amz/s1/orders/v0/orders?MarketplaceIds=A") for _ in range(20)]
    assert [r.status for r in replies[:19]] == [200] * 19, "the burst less one, kept for jitter"
    assert replies[0].headers["x-amzn-RateLimit-Limit"] == "0.0167"
    last = replies[19]
    assert last.status == 429 and last.headers["X-AuthProxy-Error"] == "rate_limited"
    assert 55 <= int(last.headers["Retry-After"]) <= 60, "the next waits for the next token, a minute"
    assert sandbox.stats.api_calls == 19 and sandbox.stats.throttled_api_calls == 0
