"""Shoptet through the real app, on every store: calls, refresh, replay, pass-through.

`shoptet_world` (also used by the concurrency tests) serves a Shoptet sandbox
and configures an app `shop` whose e-shop `eshop` has its OAuth access token
in the config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from authproxy.errors import RefreshRejected
from authproxy.models import FakeClock, HttpReply, HttpRequest, TokenKey, TokenRecord
from authproxy.platforms.shoptet import Shoptet
from authproxy.sandbox.shoptet import ShoptetSandbox
from tests.conftest import settings_for


@dataclass
class World:
    sandbox: ShoptetSandbox
    base: str  # the sandbox's URL
    oauth: str  # the e-shop's OAuth access token (in the config unless told otherwise)
    settings: Any


async def shoptet_world(serve: Any, clock: FakeClock, *, configured: bool = True, **server: Any) -> World:
    sandbox = ShoptetSandbox(client_id="addon-1", client_secret="addon-secret", clock=clock)
    upstream = await serve(sandbox.app())
    base = str(upstream.make_url("")).rstrip("/")
    oauth = sandbox.seed_oauth_token()
    app: dict[str, Any] = {
        "platform": "shoptet",
        "base_url": base,
        "auth_url": base,
        "client_id": "addon-1",
        "client_secret": "addon-secret",
    }
    if configured:
        app["shops"] = {"eshop": {"oauth_access_token": oauth}}
    return World(sandbox, base, oauth, settings_for({"shop": app}, **server))


async def test_get_and_post_json(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    client = await proxy_client(world.settings, stores.make(), clock)
    reply = await client.get(
        "/shop/eshop/api/eshop?include=contactInformation&x=%20y",
        headers={"Shoptet-Access-Token": "client-supplied", "Shoptet-Private-API-Token": "private"},
    )
    body = await reply.json()
    assert reply.status == 200, body
    assert body["query"] == "include=contactInformation&x=%20y"
    sent = body["headers"]["shoptet-access-token"]
    assert sent.startswith("222651-a-") and sent in world.sandbox.owners
    assert "shoptet-private-api-token" not in body["headers"]

    product = json.dumps({"name": "Mug", "code": "MUG-1"}).encode()
    reply = await client.post(
        "/shop/eshop/api/products", data=product, headers={"Content-Type": "application/json"}
    )
    body = await reply.json()
    assert reply.status == 200, body
    assert body["method"] == "POST" and body["headers"]["content-type"] == "application/json"
    assert body["body_sha256"] == hashlib.sha256(product).hexdigest()
    assert body["headers"]["shoptet-access-token"] == sent, "one API token for both calls"
    assert world.sandbox.stats.token_calls == 1
    assert world.sandbox.stats.getaccesstoken_methods == ["GET"]
    assert world.sandbox.stats.presented_refresh_tokens == [world.oauth]


async def test_an_expired_api_token_is_replaced_before_the_call(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    client = await proxy_client(world.settings, stores.make(), clock)
    first = (await (await client.get("/shop/eshop/api/orders")).json())["headers"]["shoptet-access-token"]
    clock.advance(1800)
    reply = await client.get("/shop/eshop/api/orders")
    body = await reply.json()
    assert reply.status == 200, body
    assert body["headers"]["shoptet-access-token"] not in ("", first)
    assert "X-AuthProxy-Retried" not in reply.headers
    stats = world.sandbox.stats
    assert (stats.token_calls, stats.rejected_api_calls) == (2, 0)
    assert stats.getaccesstoken_methods == ["GET", "GET"]
    assert stats.presented_refresh_tokens == [world.oauth, world.oauth]


async def test_expired_token_reply_refreshes_once_and_replays(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    client = await proxy_client(world.settings, stores.make(), clock)
    assert (await client.get("/shop/eshop/api/eshop")).status == 200
    world.sandbox.book.expire_all()  # Shoptet says expired while our clock says valid
    product = b'{"name": "Cup"}'
    reply = await client.post(
        "/shop/eshop/api/products", data=product, headers={"Content-Type": "application/json"}
    )
    body = await reply.json()
    assert reply.status == 200, body
    assert reply.headers["X-AuthProxy-Retried"] == "1"
    assert body["body_sha256"] == hashlib.sha256(product).hexdigest(), "the body was replayed"
    stats = world.sandbox.stats
    assert (stats.token_calls, stats.rejected_api_calls, stats.api_calls) == (2, 1, 2)


async def test_unknown_token_reply_refreshes_once_and_replays(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    client = await proxy_client(world.settings, stores.make(), clock)
    assert (await client.get("/shop/eshop/api/eshop")).status == 200
    world.sandbox.book.access.clear()  # "Invalid access token."
    reply = await client.get("/shop/eshop/api/eshop")
    assert reply.status == 200 and reply.headers["X-AuthProxy-Retried"] == "1"
    assert (world.sandbox.stats.token_calls, world.sandbox.stats.rejected_api_calls) == (2, 1)


async def test_no_rights_is_passed_through_unretried(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    client = await proxy_client(world.settings, stores.make(), clock)
    reply = await client.get("/shop/eshop/api/stocks")
    body = await reply.json()
    assert reply.status == 403
    assert body["errors"][0]["errorCode"] == "invalid-token-no-rights"
    assert "X-AuthProxy-Retried" not in reply.headers and "X-AuthProxy-Error" not in reply.headers
    assert (world.sandbox.stats.token_calls, world.sandbox.stats.rejected_api_calls) == (1, 1)


async def test_addon_not_approved_is_passed_through_unretried(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    client = await proxy_client(world.settings, stores.make(), clock)
    assert (await client.get("/shop/eshop/api/eshop")).status == 200
    world.sandbox.knobs.suspended = True
    reply = await client.get("/shop/eshop/api/eshop")
    body = await reply.json()
    assert reply.status == 401
    assert body["errors"][0] == {
        "errorCode": "invalid-token",
        "message": "Addon installation is not approved.",
        "instance": "unknown",
    }
    assert "X-AuthProxy-Retried" not in reply.headers
    assert world.sandbox.stats.token_calls == 1


async def test_a_suspended_addon_needs_reauthorization(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    world.sandbox.knobs.suspended = True
    client = await proxy_client(world.settings, stores.make(), clock)
    for _ in range(2):
        reply = await client.get("/shop/eshop/api/eshop")
        problem = await reply.json()
        assert reply.status == 401 and problem["code"] == "needs_reauthorization"
        assert "addon_suspended" in problem["detail"] and world.oauth not in json.dumps(problem)
    assert world.sandbox.stats.token_calls == 1, "a refused OAuth token is not tried again"


async def test_a_refused_oauth_token_needs_reauthorization(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    world.sandbox.knobs.reject_refresh = True
    client = await proxy_client(world.settings, stores.make(), clock)
    reply = await client.get("/shop/eshop/api/eshop")
    assert reply.status == 401 and reply.headers["X-AuthProxy-Error"] == "needs_reauthorization"


async def test_a_failing_token_endpoint_is_refresh_failed(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock)
    world.sandbox.knobs.token_status = 503
    client = await proxy_client(world.settings, stores.make(), clock)
    reply = await client.get("/shop/eshop/api/eshop")
    assert reply.status == 502 and reply.headers["X-AuthProxy-Error"] == "refresh_failed"
    assert int(reply.headers["Retry-After"]) >= 1


async def test_an_installed_addon_works_from_the_stored_oauth_token(serve, proxy_client, stores, clock):
    world = await shoptet_world(serve, clock, configured=False)
    store = stores.make()
    platform = Shoptet(world.settings.apps["shop"])
    code = world.sandbox.install_code(eshop_id=31337)
    request = platform.code_request("eshop", code, "https://addon.example/install", clock.now())
    installed = platform.parse_code_reply("eshop", await _send(request), clock.now())["eshop"]
    with pytest.raises(RefreshRejected):  # install codes are single use
        platform.parse_code_reply("eshop", await _send(request), clock.now())
    await store.put(TokenKey("shop", "eshop"), TokenRecord(installed), expected_version=0)

    client = await proxy_client(world.settings, store, clock)
    reply = await client.get("/shop/eshop/api/eshop")
    body = await reply.json()
    assert reply.status == 200, body
    assert body["eshopId"] == 31337
    assert world.sandbox.stats.presented_refresh_tokens == [installed.refresh_token]
    record = await store.get(TokenKey("shop", "eshop"))
    assert record is not None and record.token is not None
    assert record.token.refresh_token == installed.refresh_token, "kept for the next API token"
    assert record.token.extra["eshop_id"] == "31337"
    missing = await client.get("/shop/other/api/eshop")
    assert missing.status == 404 and missing.headers["X-AuthProxy-Error"] == "unknown_shop"


async def _send(request: HttpRequest) -> HttpReply:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            request.method, request.url, headers=dict(request.headers), data=request.body
        ) as answer,
    ):
        return HttpReply(answer.status, dict(answer.headers), await answer.read())


async def test_secrets_stay_out_of_the_logs(serve, proxy_client, stores, clock, logs):
    world = await shoptet_world(serve, clock)
    client = await proxy_client(world.settings, stores.make(), clock)
    assert (await client.get("/shop/eshop/api/eshop")).status == 200
    world.sandbox.book.expire_all()
    assert (await client.get("/shop/eshop/api/eshop")).status == 200
    clock.advance(1800)
    assert (await client.get("/shop/eshop/api/eshop")).status == 200
    text = logs.text()
    assert "refreshed token" in text
    for secret in [world.oauth, *world.sandbox.owners]:
        assert secret not in text
