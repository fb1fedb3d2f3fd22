"""The Shopee sandbox checks what Shopee checks; seller authorization end to end."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from pydantic import SecretStr

from authproxy.models import HttpReply, HttpRequest, OutgoingRequest, Token, TokenKey, TokenRecord
from authproxy.platforms.shopee import Shopee
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.settings import ShopeeApp
from tests.integration.test_shopee_kit import APP, KEY, PARTNER_ID, SHOP, make_rig

INFO = "/api/v2/shop/get_shop_info"


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


async def started(serve: Any, clock: Any) -> tuple[ShopeeSandbox, Shopee]:
    sandbox = ShopeeSandbox(PARTNER_ID, KEY, clock=clock)
    server = await serve(sandbox.app())
    settings = ShopeeApp(
        platform="shopee",
        partner_id=PARTNER_ID,
        partner_key=KEY,
        base_url=str(server.make_url("")).rstrip("/"),
    )
    return sandbox, Shopee(settings)


async def call(session: aiohttp.ClientSession, request: HttpRequest) -> HttpReply:
    async with session.request(
        request.method, request.url, headers=dict(request.headers), data=request.body, allow_redirects=False
    ) as reply:
        return HttpReply(reply.status, dict(reply.headers), await reply.read())


async def api(session, platform: Shopee, shop: str, access: str, now: float) -> dict[str, Any]:
    token = Token(access_token=access, expires_at=None, obtained_at=now)
    signed = platform.apply_auth(shop, OutgoingRequest("GET", INFO, "", ()), token, now)
    async with session.get(f"{platform.base_url}{signed.path}?{signed.query}") as reply:
        return {"status": reply.status, **(await reply.json())}


def pair_of(reply: HttpReply) -> dict[str, Any]:
    return dict(json.loads(reply.body))


async def test_calls_are_checked_like_shopee(serve, clock, session):
    sandbox, platform = await started(serve, clock)
    access = sandbox.mint(SHOP)["access_token"]
    now = clock.now()
    assert (await api(session, platform, SHOP, access, now))["error"] == ""
    late = await api(session, platform, SHOP, access, now - 301)
    assert (late["status"], late["error"], late["message"]) == (403, "error_param", "Invalid timestamp.")
    other_shop = await api(session, platform, "999", access, now)
    assert (other_shop["error"], other_shop["message"]) == ("invalid_acceess_token", "Invalid access_token.")
    wrong_key = Shopee(platform.settings.model_copy(update={"partner_key": SecretStr("nope")}))
    bad = await api(session, wrong_key, SHOP, access, now)
    assert (bad["status"], bad["error"], bad["message"]) == (403, "error_sign", "Wrong sign.")
    clock.advance(14400)
    expired = await api(session, platform, SHOP, access, clock.now())
    assert expired["status"] == 403 and expired["error"] == "invalid_acceess_token"
    assert expired["request_id"]
    assert sandbox.stats.api_calls == 1 and sandbox.stats.rejected_api_calls == 4


async def test_refresh_tokens_are_single_use_and_the_old_access_token_lives_five_minutes(
    serve, clock, session
):
    sandbox, platform = await started(serve, clock)
    first = sandbox.mint(SHOP)
    current = Token(first["access_token"], None, clock.now(), first["refresh_token"])
    request = platform.token_request(SHOP, current, clock.now())
    assert request is not None
    renewed = platform.parse_token(SHOP, await call(session, request), current, clock.now())
    assert renewed.refresh_token != first["refresh_token"]
    again = await call(session, request)
    assert pair_of(again)["error"] == "error_param" and pair_of(again)["message"] == "Invalid refresh_token."
    assert sandbox.stats.reused_refresh_tokens == 1
    clock.advance(299)
    assert (await api(session, platform, SHOP, first["access_token"], clock.now()))["error"] == ""
    clock.advance(2)
    old = await api(session, platform, SHOP, first["access_token"], clock.now())
    assert old["error"] == "invalid_acceess_token"
    assert (await api(session, platform, SHOP, renewed.access_token, clock.now()))["error"] == ""


async def test_seller_authorization_of_a_shop(serve, proxy_client, stores, clock, session):
    rig = await make_rig(serve, proxy_client, stores, clock)
    platform = Shopee(
        ShopeeApp(platform="shopee", partner_id=PARTNER_ID, partner_key=KEY, base_url=rig.sandbox_url)
    )
    rig.sandbox.consenting = f"shop_id:{SHOP}"
    link = platform.authorize_url("https://app.example/callback", "st4te", clock.now())
    async with session.get(link, allow_redirects=False) as consent:
        assert consent.status == 302
        landing = parse_qs(urlsplit(consent.headers["Location"]).query)
    assert landing["state"] == ["st4te"] and landing["shop_id"] == [SHOP]
    exchange = platform.code_request(landing["shop_id"][0], landing["code"][0], None, clock.now())
    tokens = platform.parse_code_reply(SHOP, await call(session, exchange), clock.now())
    assert list(tokens) == [SHOP]
    await rig.store.put(TokenKey(APP, SHOP), TokenRecord(token=tokens[SHOP]), expected_version=0)
    reply = await rig.client.get(f"/{APP}/{SHOP}{INFO}")
    assert reply.status == 200, await reply.text()
    reused = await call(session, exchange)  # a code is single use
    assert pair_of(reused)["message"] == "Invalid code"


async def test_main_account_code_covers_every_shop_and_merchant(serve, proxy_client, stores, clock, session):
    rig = await make_rig(serve, proxy_client, stores, clock)
    platform = Shopee(
        ShopeeApp(platform="shopee", partner_id=PARTNER_ID, partner_key=KEY, base_url=rig.sandbox_url)
    )
    rig.sandbox.add_main_account(77, shops=[11, 12], merchants=[5])
    code = rig.sandbox.issue_code("main_account_id:77")
    reply = await call(session, platform.code_request("main:77", code, None, clock.now()))
    tokens = platform.parse_code_reply("main:77", reply, clock.now())
    assert set(tokens) == {"11", "12", "merchant:5"}
    for shop, token in tokens.items():
        await rig.store.put(TokenKey(APP, shop), TokenRecord(token=token), expected_version=0)
    clock.advance(14401)  # the shared pair expired: each shop and merchant renews it once, for itself
    for shop in tokens:
        answer = await rig.client.get(f"/{APP}/{shop}{INFO}")
        assert answer.status == 200, await answer.text()
    stats = rig.sandbox.stats
    assert stats.token_calls == 4 and stats.reused_refresh_tokens == 0
    records = [await rig.stored(shop) for shop in tokens]
    assert len({r.token.refresh_token for r in records if r and r.token}) == 3  # own pairs now
