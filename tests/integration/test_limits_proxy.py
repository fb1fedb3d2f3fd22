"""Rate limits on the request path: waiting, refusing, penalties, the one retry, learning.

Shoptet's sandbox here has a small bucket (20 drops, 5/s) so a test fills it
quickly; the proxies get the matching rate from the config and learn the
capacity from the filling header.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
from typing import Any

import pytest

from authproxy.errors import StoreUnavailable
from authproxy.runtime import RUNTIME
from authproxy.sandbox.amazon import AmazonSandbox
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.sandbox.shoptet import ShoptetSandbox
from authproxy.settings import LimitSettings
from tests.conftest import settings_for, url_of
from tests.integration.test_limits_amazon import amazon_app

SHOPTET = "/shop/eshop/api/orders"


async def _shoptet(serve: Any, **server: Any) -> tuple[ShoptetSandbox, Any]:
    sandbox = ShoptetSandbox(client_id="addon-1", client_secret="addon-secret", bucket=(20, 5.0))
    base = url_of(await serve(sandbox.app()))
    app = {
        "platform": "shoptet",
        "base_url": base,
        "auth_url": base,
        "client_id": "addon-1",
        "client_secret": "addon-secret",
        "shops": {"eshop": {"oauth_access_token": sandbox.seed_oauth_token()}},
        "limits": [{"match": "*", "rate": 5.0, "burst": 10}],
    }
    return sandbox, settings_for({"shop": app}, **server)


async def test_shoptet_http_date_holds_every_replica_until_then(serve, proxy_client, redis_stores):
    sandbox, settings = await _shoptet(serve)
    proxies = [await proxy_client(settings, redis_stores.make()) for _ in range(3)]
    assert (await proxies[0].get(SHOPTET)).status == 200  # the token, before the bucket fills
    sandbox.fill_bucket()  # the shop's other API users used it up

    first = await proxies[0].get(SHOPTET, headers={"X-AuthProxy-Max-Wait": "0"})
    assert first.status == 429 and "X-AuthProxy-Error" not in first.headers, "the platform's own 429"
    date = sandbox.retry_dates[0]
    assert 1 <= int(first.headers["Retry-After"]) <= 2, "an HTTP-date became seconds"
    assert first.headers["X-RateLimit-Bucket-Filling"] == "20/20"

    wave = await asyncio.gather(*(proxies[i % 3].get(SHOPTET) for i in range(9)))
    assert [r.status for r in wave] == [200] * 9, "queued calls complete after the date"
    calls = sandbox.arrivals.calls["222651"]
    after_429 = [at for at, _ in calls[calls.index(next(c for c in calls if not c[1])) + 1 :]]
    assert len(after_429) == 9 and min(after_429) >= date, "no replica called before the date"


async def test_a_fuller_bucket_than_counted_slows_the_shop_down(serve, proxy_client, stores):
    """Someone else uses the shop's bucket: its filling header moves ours up, before a 429."""
    sandbox, settings = await _shoptet(serve)
    client = await proxy_client(settings, stores.make())
    assert (await client.get(SHOPTET)).status == 200
    sandbox.bucket(222651).level = 12.0  # other users: 12 drops
    reply = await client.get(SHOPTET)
    assert reply.headers["X-RateLimit-Bucket-Filling"] == "13/20"
    replies = await asyncio.gather(*(client.get(SHOPTET) for _ in range(8)))
    assert [r.status for r in replies] == [200] * 8
    assert sandbox.stats.throttled_api_calls == 0, "slowed down in time: no 429"
    rates = client.server.app[RUNTIME].shaper.rates
    (bucket,) = await rates.buckets("shop", "eshop")
    assert bucket.burst == 18, "the capacity it announced, a tenth kept free"


async def test_an_identical_write_in_progress_gets_423_once_never_retried(serve, proxy_client, stores):
    sandbox, settings = await _shoptet(serve)
    client = await proxy_client(settings, stores.make())
    body = json.dumps({"code": "MUG-1", "amount": 3})
    held = asyncio.create_task(client.post("/shop/eshop/api/stock/held", data=body))
    await _until(lambda: sandbox.writing)
    second = await client.post("/shop/eshop/api/stock/held", data=body)
    sandbox.held.set()
    assert second.status == 423 and "X-AuthProxy-Retried" not in second.headers
    assert (await held).status == 200
    assert sandbox.stats.locked == 1 and sandbox.stats.api_calls == 1


async def test_a_lower_max_wait_is_refused_at_once_and_nothing_is_sent(serve, proxy_client, stores):
    sandbox, settings = await _shoptet(serve)
    sandbox.knobs.limits = False  # no filling header: the config's limit stands
    one_per_5s = [LimitSettings(match="*", rate=0.2, burst=2)]  # shaped to burst 1: 5 s apart
    app = settings.apps["shop"].model_copy(update={"limits": one_per_5s})
    client = await proxy_client(settings.model_copy(update={"apps": {"shop": app}}), stores.make())
    assert (await client.get(SHOPTET)).status == 200  # takes the one turn: the next is 5 s away
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply = await client.get(SHOPTET, headers={"X-AuthProxy-Max-Wait": "1"})
    took = loop.time() - started
    problem = await reply.json()
    assert reply.status == 429 and problem["code"] == "rate_limited"
    assert reply.headers["X-AuthProxy-Error"] == "rate_limited"
    assert reply.headers["X-AuthProxy-RateLimit-Scope"] == "shop"
    assert reply.headers["Retry-After"] in ("4", "5")
    assert sandbox.stats.api_calls == 1, "nothing sent upstream"
    assert took < 1.0, "refused without waiting"
    metrics = client.server.app[RUNTIME].metrics.render().decode()
    assert 'authproxy_rate_limited_total{app="shop",scope="shop"} 1.0' in metrics
    print(f"\nrate_limited answered in {took * 1000:.1f} ms")


async def test_a_bad_max_wait_is_a_bad_header(serve, proxy_client, stores):
    sandbox, settings = await _shoptet(serve)
    client = await proxy_client(settings, stores.make())
    for value in ("soon", "-1", "nan"):
        reply = await client.get(SHOPTET, headers={"X-AuthProxy-Max-Wait": value})
        assert reply.status == 400 and reply.headers["X-AuthProxy-Error"] == "bad_header"
    assert sandbox.stats.api_calls == 0


async def test_a_429_with_a_short_wait_is_retried_once(serve, proxy_client, stores):
    """Amazon's QuotaExceeded names no wait: one interval of the operation's rate, then once more."""
    sandbox = AmazonSandbox("cid", "csecret")
    sandbox.set_limit("getOrder", 2.0, 1)
    base = url_of(await serve(sandbox.app()))
    too_high = [{"match": "GET /orders/v0/orders/*", "rate": 100.0}]  # more than Amazon takes
    app = amazon_app(base, {"s1": sandbox.seed_refresh_token()}, too_high)
    sandbox.announce = False  # x-amzn-RateLimit-Limit is best effort: nothing to learn from
    client = await proxy_client(settings_for({"amz": app}), stores.make())
    replies = [await client.get("/amz/s1/orders/v0/orders/902-1") for _ in range(2)]
    assert [r.status for r in replies] == [200, 200]
    assert replies[1].headers.get("X-AuthProxy-Retried") == "1", "refused at the gate, sent once more"
    assert sandbox.stats.throttled_api_calls == 1
    metrics = client.server.app[RUNTIME].metrics.render().decode()
    assert 'authproxy_upstream_throttled_total{app="amz"} 1.0' in metrics


async def test_the_announced_rate_is_learned_before_a_429(serve, proxy_client, stores):
    sandbox = AmazonSandbox("cid", "csecret")
    sandbox.set_limit("getOrder", 2.0, 1)
    base = url_of(await serve(sandbox.app()))
    too_high = [{"match": "GET /orders/v0/orders/*", "rate": 100.0}]
    app = amazon_app(base, {"s1": sandbox.seed_refresh_token()}, too_high)
    client = await proxy_client(settings_for({"amz": app}), stores.make())
    replies = [await client.get("/amz/s1/orders/v0/orders/902-1") for _ in range(3)]
    assert [r.status for r in replies] == [200] * 3
    assert sandbox.stats.throttled_api_calls == 0, "2.0/s learned from the first reply"
    metrics = client.server.app[RUNTIME].metrics.render().decode()
    assert 'authproxy_ratelimit_learned_rate{app="amz",operation="GET /orders/v0/orders/*"} 2.0' in metrics


async def test_shopee_error_rate_limit_rests_the_shop_a_minute(serve, proxy_client, stores):
    sandbox = ShopeeSandbox(2001887, "partner-key-of-the-test")
    base = url_of(await serve(sandbox.app()))
    sandbox.throttle_calls = 1
    seed = sandbox.mint("1001")["refresh_token"]
    app = {
        "platform": "shopee",
        "base_url": base,
        "partner_id": sandbox.partner_id,
        "partner_key": sandbox.partner_key,
        "shops": {"1001": {"refresh_token": seed}},
    }
    client = await proxy_client(settings_for({"sp": app}), stores.make())
    reply = await client.get("/sp/1001/api/v2/product/get_item_list")
    assert reply.status == 429 and "X-AuthProxy-Error" not in reply.headers, "the platform's reply"
    assert reply.headers["Retry-After"] == "60" and "X-AuthProxy-Retried" not in reply.headers
    again = await client.get("/sp/1001/api/v2/product/get_item_list")
    assert again.status == 429 and again.headers["X-AuthProxy-Error"] == "rate_limited"
    assert sandbox.stats.throttled_api_calls == 1, "the penalty kept the second call home"


async def test_an_unreachable_store_lets_calls_through_unshaped(
    serve, proxy_client, stores, logs, monkeypatch
):
    """An outage costs one store timeout, not one per call: after the store failed, calls skip
    it at once; a probe (in the background, never waited on) finds it back."""
    sandbox, settings = await _shoptet(serve)
    client = await proxy_client(settings, stores.make())
    assert (await client.get(SHOPTET)).status == 200
    shaper = client.server.app[RUNTIME].shaper
    working, asked, answer = shaper.rates, [], asyncio.Event()

    class Down:
        async def admit(self, *args: Any) -> Any:
            asked.append(args)
            if not answer.is_set():
                raise StoreUnavailable("token store unreachable (ConnectionError)")
            return await working.admit(*args)

        async def learn(self, *args: Any) -> Any:
            if not answer.is_set():
                raise StoreUnavailable("token store unreachable (ConnectionError)")
            return await working.learn(*args)

        refund = buckets = learn

        async def close(self) -> None:
            await working.close()

    monkeypatch.setattr("authproxy.store.reachability.PROBE_EVERY", 1e9)  # no probe due yet
    shaper.rates = Down()
    assert (await client.get(SHOPTET)).status == 200
    assert "calls go unshaped" in logs.text() and len(asked) == 1
    assert (await client.get(SHOPTET)).status == 200
    assert len(asked) == 1, "not asked again before a probe is due"

    monkeypatch.setattr("authproxy.store.reachability.PROBE_EVERY", 0.0)
    stall = asyncio.Event()
    working_admit = working.admit

    async def stalled(*args: Any) -> Any:
        await stall.wait()  # the store is back, but slow to answer
        return await working_admit(*args)

    monkeypatch.setattr(working, "admit", stalled)
    answer.set()
    assert (await client.get(SHOPTET)).status == 200, "served while the probe waits"
    assert len(asked) == 2 and shaper.reachability.down
    stall.set()
    await _until(lambda: not shaper.reachability.down)
    assert "the store answers again: rate buckets are back" in logs.text()
    before = len(asked)
    assert (await client.get(SHOPTET)).status == 200
    assert len(asked) == before + 1, "shaped again: the call asked the store"
    assert sandbox.stats.api_calls == 5


def test_the_sandbox_answers_an_http_date():
    stamp = email.utils.formatdate(1_800_000_000, usegmt=True)
    assert stamp == "Fri, 15 Jan 2027 08:00:00 GMT"


async def _until(condition: Any, seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            pytest.fail("the condition did not come true in time")
        await asyncio.sleep(0.005)
