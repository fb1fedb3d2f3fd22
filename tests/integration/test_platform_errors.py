"""authproxy's own errors in each platform's error shape too (issue 15, fix 2), problem+json intact."""

from __future__ import annotations

from typing import Any

import pytest

from authproxy.sandbox.amazon import AmazonSandbox
from authproxy.sandbox.oauth2 import OAuth2Sandbox
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.sandbox.tiktok import TikTokSandbox
from authproxy.store.memory import MemoryStore
from tests.conftest import oauth2_app, settings_for, url_of

PROBLEM = {"type", "title", "status", "detail", "code", "app", "shop", "request_id", "action"}


async def apps(serve: Any) -> dict[str, Any]:
    amazon = url_of(await serve(AmazonSandbox("cid", "csecret").app()))
    shopee = url_of(await serve(ShopeeSandbox(2001887, "pkey").app()))
    tiktok = url_of(await serve(TikTokSandbox("ttkey", "ttsecret").app()))
    oauth = url_of(await serve(OAuth2Sandbox("cid", "csecret").app()))
    return {
        "amz": {"platform": "amazon", "base_url": amazon, "auth_url": amazon, "client_id": "cid",
                "client_secret": "csecret"},
        "shopee": {"platform": "shopee", "base_url": shopee, "partner_id": 2001887, "partner_key": "pkey"},
        "tt": {"platform": "tiktok", "base_url": tiktok, "auth_url": tiktok, "app_key": "ttkey",
               "app_secret": "ttsecret"},
        "o2": oauth2_app(oauth, seed="rt-seed"),
    }  # fmt: skip


@pytest.fixture
async def client(serve, proxy_client, clock):
    return await proxy_client(settings_for(await apps(serve)), MemoryStore(), clock)


async def problem_of(client: Any, path: str) -> tuple[Any, dict[str, Any]]:
    reply = await client.get(path)
    body = await reply.json(content_type="application/problem+json")
    assert reply.headers["X-AuthProxy-Error"] == body["code"] == "unknown_shop"
    assert reply.status == body["status"] == 404
    assert set(body) >= PROBLEM and body["request_id"] == reply.headers["X-Request-Id"]
    return reply, body


async def test_amazon_apps_add_the_sp_api_errors_envelope(client):
    _, body = await problem_of(client, "/amz/nobody/orders/v0/orders")
    assert body["errors"] == [{"code": "unknown_shop", "message": body["detail"], "details": body["action"]}]


async def test_shopee_apps_add_error_and_message(client):
    _, body = await problem_of(client, "/shopee/123/api/v2/shop/get_shop_info")
    assert body["error"] == "unknown_shop" and body["message"] == body["detail"]


async def test_tiktok_apps_add_message_and_keep_the_problem_code(client):
    _, body = await problem_of(client, "/tt/nobody/order/202309/orders")
    assert body["message"] == body["detail"]
    assert body["code"] == "unknown_shop"  # never replaced: problem+json members win


async def test_other_platforms_and_unknown_apps_answer_plain_problem_json(client):
    _, body = await problem_of(client, "/o2/nobody/v2/products")
    assert set(body) == PROBLEM
    reply = await client.get("/nope/s/x")
    body = await reply.json(content_type="application/problem+json")
    assert body["code"] == "unknown_app" and set(body) == PROBLEM
