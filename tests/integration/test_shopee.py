"""Shopee through the real proxy app against the Shopee sandbox, on every store."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from authproxy.platforms.shopee import base_string, sign
from tests.integration.test_shopee_kit import APP, KEY, PARTNER_ID, SHOP, make_rig, params, public_sign

CLIENT_OWNED = "partner_id=1&timestamp=2&access_token=client-token&shop_id=99&merchant_id=5&sign=deadbeef"


async def test_get_signs_the_query_and_replaces_client_params(
    serve, proxy_client, stores, clock, logs, monkeypatch
):
    # the sandbox's own access log shows what it received; only authproxy's lines matter
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)
    rig = await make_rig(serve, proxy_client, stores, clock)
    token = await rig.seed()
    target = f"/{APP}/{SHOP}/api/v2/shop/get_shop_info?item=a%20b&{CLIENT_OWNED}&x=%2F"
    reply = await rig.client.session.get(rig.raw_url(target))
    body = await reply.json()
    assert reply.status == 200, body
    assert body["path"] == "/api/v2/shop/get_shop_info" and body["error"] == ""
    assert body["query"].startswith("item=a%20b&x=%2F&")  # client bytes kept, in order
    now = int(clock.now())
    expected = sign(KEY, base_string(PARTNER_ID, "/api/v2/shop/get_shop_info", now, token.access_token, SHOP))
    assert params(body["query"]) == {
        "item": ["a b"],
        "x": ["/"],
        "partner_id": [str(PARTNER_ID)],
        "timestamp": [str(now)],
        "access_token": [token.access_token],
        "shop_id": [SHOP],
        "sign": [expected],
    }
    assert "X-AuthProxy-Retried" not in reply.headers
    assert rig.sandbox.stats.token_calls == 0
    assert token.access_token not in logs.text() and expected not in logs.text()


async def test_post_json_body_is_forwarded_untouched(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores, clock)
    await rig.seed()
    payload = b'{"item_name": "Kopi \xc3\xa9", "price":  1.50, "sign": "client"}'
    reply = await rig.client.post(
        f"/{APP}/{SHOP}/api/v2/product/add_item?{CLIENT_OWNED}",
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    body = await reply.json()
    assert reply.status == 200, body
    assert body["method"] == "POST" and body["headers"]["content-type"] == "application/json"
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert params(body["query"])["shop_id"] == [SHOP] and "merchant_id" not in params(body["query"])


async def test_expired_token_is_refreshed_with_the_exact_request(
    serve, proxy_client, stores, clock, logs, monkeypatch
):
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)  # the sandbox's log
    rig = await make_rig(serve, proxy_client, stores, clock)
    old = await rig.seed()
    clock.advance(14400 + 1)
    reply = await rig.client.get(f"/{APP}/{SHOP}/api/v2/order/get_order_list?page_size=10")
    body = await reply.json()
    assert reply.status == 200, body
    assert rig.sandbox.stats.token_calls == 1 and rig.sandbox.stats.rejected_api_calls == 0
    [sent] = rig.sandbox.token_requests
    now = int(clock.now())
    assert sent["path"] == "/api/v2/auth/access_token/get"
    assert params(sent["query"]) == {
        "partner_id": [str(PARTNER_ID)],
        "timestamp": [str(now)],
        "sign": [public_sign("/api/v2/auth/access_token/get", now)],
    }
    assert sent["body"] == {
        "refresh_token": old.refresh_token,
        "partner_id": PARTNER_ID,
        "shop_id": int(SHOP),
    }
    record = await rig.stored()
    assert record is not None and record.token is not None
    new = record.token
    assert new.refresh_token not in (None, old.refresh_token)  # rotated and stored
    assert new.refresh_expires_at == clock.now() + 30 * 86400
    assert params(body["query"])["access_token"] == [new.access_token]
    text = logs.text()
    assert "refreshed token" in text
    for secret in (KEY, old.access_token, old.refresh_token, new.access_token, new.refresh_token):
        assert secret and secret not in text


@pytest.mark.parametrize("status", [403, 200])  # the error's HTTP status is UNVERIFIED: both readings
async def test_invalid_token_means_one_refresh_and_one_replay(serve, proxy_client, stores, clock, status):
    rig = await make_rig(serve, proxy_client, stores, clock)
    rig.sandbox.invalid_token_status = status
    await rig.seed()
    await rig.expire_upstream()
    payload = json.dumps({"item_id": 1}).encode()
    reply = await rig.client.post(
        f"/{APP}/{SHOP}/api/v2/product/update_item",
        data=payload,
        headers={"Content-Type": "application/json"},
    )
    body = await reply.json()
    assert reply.status == 200, body
    assert reply.headers["X-AuthProxy-Retried"] == "1"
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()
    stats = rig.sandbox.stats
    assert (stats.rejected_api_calls, stats.token_calls, stats.api_calls) == (1, 1, 1)
    assert stats.reused_refresh_tokens == 0


async def test_wrong_sign_is_passed_through_unretried(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores, clock, partner_key="not-the-partner-key")
    await rig.seed()
    reply = await rig.client.get(f"/{APP}/{SHOP}/api/v2/shop/get_shop_info")
    body = await reply.json()
    assert reply.status == 403
    assert (body["error"], body["message"]) == ("error_sign", "Wrong sign.")
    assert "X-AuthProxy-Retried" not in reply.headers and "X-AuthProxy-Error" not in reply.headers
    stats = rig.sandbox.stats
    assert (stats.rejected_api_calls, stats.api_calls, stats.token_calls) == (1, 0, 0)


async def test_permission_error_is_passed_through_unretried(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores, clock)
    await rig.seed()
    rig.sandbox.denied_paths.add("/api/v2/returns/get_return_list")
    reply = await rig.client.get(f"/{APP}/{SHOP}/api/v2/returns/get_return_list")
    body = await reply.json()
    assert reply.status == 403 and body["error"] == "error_permission"
    assert "X-AuthProxy-Retried" not in reply.headers
    stats = rig.sandbox.stats
    assert (stats.rejected_api_calls, stats.api_calls, stats.token_calls) == (1, 0, 0)


async def test_merchant_calls_and_refresh(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores, clock)
    shop = "merchant:1000000"
    old = await rig.seed(shop)
    reply = await rig.client.get(f"/{APP}/{shop}/api/v2/global_product/get_category?language=en")
    body = await reply.json()
    assert reply.status == 200, body
    query = params(body["query"])
    assert query["merchant_id"] == ["1000000"] and "shop_id" not in query
    clock.advance(14401)
    reply = await rig.client.get(f"/{APP}/{shop}/api/v2/global_product/get_category")
    assert reply.status == 200, await reply.text()
    [sent] = rig.sandbox.token_requests
    assert sent["body"] == {
        "refresh_token": old.refresh_token,
        "partner_id": PARTNER_ID,
        "merchant_id": 1000000,
    }


async def test_rejected_refresh_asks_for_reauthorization_without_looping(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores, clock)
    await rig.seed()
    rig.sandbox.knobs.reject_refresh = True
    await rig.expire_upstream()  # the proxy still thinks its token is good: invalid-token path
    for _ in range(2):
        reply = await rig.client.get(f"/{APP}/{SHOP}/api/v2/shop/get_shop_info")
        problem = await reply.json()
        assert reply.status == 401, problem
        assert problem["code"] == "needs_reauthorization"
        assert reply.headers["X-AuthProxy-Error"] == "needs_reauthorization"
        assert "Invalid refresh_token" in problem["detail"]
    stats = rig.sandbox.stats
    # one refresh in all; each request went upstream once (its token still looked valid), never replayed
    assert (stats.token_calls, stats.rejected_api_calls, stats.api_calls) == (1, 2, 0)


async def test_rejected_refresh_of_an_expired_token(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores, clock)
    await rig.seed()
    clock.advance(31 * 86400)  # the refresh token expired as well
    reply = await rig.client.get(f"/{APP}/{SHOP}/api/v2/shop/get_shop_info")
    problem = await reply.json()
    assert reply.status == 401 and problem["code"] == "needs_reauthorization"
    assert "refresh_token expired" in problem["detail"]
    assert rig.sandbox.stats.token_calls == 1 and rig.sandbox.stats.api_calls == 0


@pytest.mark.parametrize("shop", ["my-shop", "main:5", "0123"])
async def test_shop_segments_that_name_no_shopee_account(serve, proxy_client, stores, clock, shop):
    rig = await make_rig(serve, proxy_client, stores, clock)
    reply = await rig.client.get(f"/{APP}/{shop}/api/v2/shop/get_shop_info")
    problem = await reply.json()
    assert reply.status == 404 and problem["code"] == "unknown_shop"
    assert rig.sandbox.stats.token_calls == 0


async def test_shop_without_any_token_is_unknown(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores, clock)
    reply = await rig.client.get(f"/{APP}/424242/api/v2/shop/get_shop_info")
    assert reply.status == 404 and (await reply.json())["code"] == "unknown_shop"


async def test_configured_seed_refresh_token_and_base_url_prefix(serve, proxy_client, stores, clock):
    prefix = "/gateway/shopee"
    rig = await make_rig(serve, proxy_client, stores, clock, prefix=prefix, seeded_shops=(SHOP,))
    reply = await rig.client.get(f"/{APP}/{SHOP}/api/v2/shop/get_shop_info?a=1")
    body = await reply.json()
    assert reply.status == 200, body  # the sandbox checked the sign over the prefixed path
    assert body["path"] == prefix + "/api/v2/shop/get_shop_info"
    [sent] = rig.sandbox.token_requests
    assert sent["path"] == prefix + "/api/v2/auth/access_token/get"
    now = int(clock.now())
    assert params(sent["query"])["sign"] == [public_sign(prefix + "/api/v2/auth/access_token/get", now)]
    clock.advance(14401)  # the seed is spent: the rotated token in the store is what works now
    reply = await rig.client.get(f"/{APP}/{SHOP}/api/v2/shop/get_shop_info")
    assert reply.status == 200, await reply.text()
    assert rig.sandbox.stats.token_calls == 2 and rig.sandbox.stats.reused_refresh_tokens == 0


async def test_public_api_is_signed_without_token(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores, clock)
    await rig.seed()
    reply = await rig.client.get(
        f"/{APP}/{SHOP}/api/v2/public/get_shops_by_partner?page_size=5&{CLIENT_OWNED}"
    )
    body = await reply.json()
    assert reply.status == 200, body
    assert set(params(body["query"])) == {"page_size", "partner_id", "timestamp", "sign"}


async def test_large_download_streams_through(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores, clock)
    await rig.seed()
    reply = await rig.client.get(f"/{APP}/{SHOP}/api/v2/media_space/stream?bytes=300000")
    assert reply.status == 200
    assert len(await reply.read()) == 300000
