"""The OAuth callback route through the real app, on every store: off unless public_url is
set; a signed, unexpired state for this app or nothing happens; Amazon and TikTok end to end."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from yarl import URL

from authproxy.authorize import STATE_LIFETIME, callback_url, sign_state
from authproxy.models import FakeClock, Token, TokenKey, TokenRecord, TokenStatus
from authproxy.platforms import build_platform
from authproxy.sandbox.amazon import AmazonSandbox
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.sandbox.tiktok import TikTokSandbox
from authproxy.settings import Settings
from authproxy.store import ANY_VERSION, TokenStore
from tests.conftest import url_of

AMZ_ID, AMZ_SECRET = "amzn1.application-oa2-client.cb", "amzn1.oa2-cs.v1.cb-secret"
TT_KEY, TT_SECRET, CIPHER = "tt-key", "tt-secret", "ROW_cb1"
SECRET = "callback-state-secret-0123456789"
PUBLIC = "https://proxy.example"
CALLBACK = "/_authproxy/oauth/{app}/callback"
ORDERS = "/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER"
SP_PARTNER, SP_KEY = 2001887, "shpk-callback-partner-key"


@dataclass
class Rig:
    amazon: AmazonSandbox
    tiktok: TikTokSandbox
    shopee: ShopeeSandbox
    settings: Settings
    store: TokenStore
    client: Any
    clock: FakeClock

    def state(self, app: str, shop: str | None = None, secret: str = SECRET) -> str:
        return sign_state(secret, app, shop, self.clock.now())

    def link(self, app: str, shop: str | None = None) -> str:
        """The consent link as `authorize-url` makes it with the callback on."""
        redirect = callback_url(self.settings.server, app)
        platform = build_platform(self.settings.apps[app])
        return platform.authorize_url(redirect, self.state(app, shop), self.clock.now())

    def link_state(self, app: str, shop: str | None = None) -> tuple[str, str]:
        """(state, redirect) as `authorize-url` puts them in the consent link."""
        state = parse_qs(urlsplit(self.link(app, shop)).query)["state"][0]
        return state, callback_url(self.settings.server, app) or ""

    async def consent(self, link: str) -> Any:
        """A seller's browser: open the consent page, follow it back to the proxy's callback."""
        async with self.client.session.get(link, allow_redirects=False) as page:
            assert page.status == 302, await page.text()
            back = URL(page.headers["Location"])
        assert str(back.with_query(None)) == callback_url(self.settings.server, "sp")
        return await self.client.get(back.path_qs)

    async def callback(self, app: str, headers: dict[str, str] | None = None, **query: str) -> Any:
        return await self.client.get(CALLBACK.format(app=app), params=query, headers=headers or {})

    async def record(self, app: str, shop: str) -> TokenRecord | None:
        return await self.store.get(TokenKey(app, shop))


async def make_rig(serve, proxy_client, store, clock, *, public: bool = True, **settings: Any) -> Rig:
    amazon = AmazonSandbox(AMZ_ID, AMZ_SECRET, clock=clock)
    tiktok = TikTokSandbox(TT_KEY, TT_SECRET, clock=clock, shop_ciphers=(CIPHER,))
    shopee = ShopeeSandbox(SP_PARTNER, SP_KEY, clock=clock)
    sp = url_of(await serve(shopee.app()))
    amz = url_of(await serve(amazon.app()))
    tt = url_of(await serve(tiktok.app()))
    apps = {
        "amz": {
            "platform": "amazon",
            "base_url": amz,
            "auth_url": amz,
            "client_id": AMZ_ID,
            "client_secret": AMZ_SECRET,
            "application_id": "amzn1.sp.solution.cb",
        },
        "sp": {"platform": "shopee", "base_url": sp, "partner_id": SP_PARTNER, "partner_key": SP_KEY},
        "tt": {
            "platform": "tiktok",
            "base_url": tt,
            "auth_url": tt,
            "app_key": TT_KEY,
            "app_secret": TT_SECRET,
            "service_id": "7001",
            "shops": {"cb1": {"shop_cipher": CIPHER}},
        },
    }
    server = {"store_url": "memory://", **({"public_url": PUBLIC, "state_secret": SECRET} if public else {})}
    config = Settings(server=server, apps=apps, **settings)
    client = await proxy_client(config, store, clock)
    return Rig(amazon, tiktok, shopee, config, store, client, clock)


@pytest.fixture
async def rig(serve, proxy_client, stores, clock) -> Rig:
    return await make_rig(serve, proxy_client, stores.make(), clock)


async def problem(reply: Any, status: int, code: str) -> dict[str, Any]:
    body = await reply.json(content_type=None)
    assert (reply.status, body["code"]) == (status, code), body
    assert reply.headers["X-AuthProxy-Error"] == code
    assert reply.headers["Content-Type"] == "application/problem+json"
    return dict(body)


# -- good flows ----------------------------------------------------------------------------


def our_logs(caplog: pytest.LogCaptureFixture) -> str:
    """What authproxy logged (the test server's own aiohttp access log is off in `serve`)."""
    return "\n".join(
        f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records if r.name != "aiohttp.access"
    )


async def test_amazon_end_to_end_stores_the_selling_partner_and_the_proxy_uses_it(rig, caplog):
    caplog.set_level(logging.DEBUG)
    state, redirect = rig.link_state("amz")
    assert redirect == PUBLIC + "/_authproxy/oauth/amz/callback"
    code = rig.amazon.issue_code(redirect)  # Amazon checks the exchange names the same redirect
    reply = await rig.callback("amz", state=state, spapi_oauth_code=code, selling_partner_id="A1SELLER")
    body = await reply.json()
    assert reply.status == 200, body
    assert body == {"status": "authorized", "app": "amz", "shops": ["A1SELLER"]}
    assert reply.headers["Cache-Control"] == "no-store"
    record = await rig.record("amz", "A1SELLER")
    assert record is not None and record.token is not None and record.status is TokenStatus.OK
    assert record.last_refresh == rig.clock.now()
    proxied = await rig.client.get("/amz/A1SELLER" + ORDERS)
    assert proxied.status == 200, await proxied.text()
    assert (await proxied.json())["headers"]["x-amz-access-token"] == record.token.access_token
    assert rig.amazon.stats.token_calls == 1  # the exchange only
    for secret in (code, state, record.token.access_token, record.token.refresh_token or "?", AMZ_SECRET):
        assert secret not in our_logs(caplog) and secret not in str(body)
    assert "authorized amz/A1SELLER" in our_logs(caplog)


async def test_the_states_shop_wins_and_a_browser_gets_a_page(rig):
    state, redirect = rig.link_state("amz", "seller-eu")
    code = rig.amazon.issue_code(redirect)
    reply = await rig.callback(
        "amz",
        headers={"Accept": "text/html,application/xhtml+xml"},
        state=state,
        spapi_oauth_code=code,
        selling_partner_id="A1SELLER",
    )
    page = await reply.text()
    assert reply.status == 200 and reply.content_type == "text/html"
    assert "seller-eu" in page and "Authorized" in page
    assert reply.headers["Content-Security-Policy"] == "default-src 'none'"
    record = await rig.record("amz", "seller-eu")
    assert record is not None and record.token is not None
    assert record.token.access_token not in page and await rig.record("amz", "A1SELLER") is None


async def test_tiktok_end_to_end_with_the_shop_from_the_state(rig):
    state, _ = rig.link_state("tt", "cb1")
    code = rig.tiktok.issue_auth_code()
    reply = await rig.callback("tt", code=code, state=state)
    assert reply.status == 200, await reply.text()
    assert (await reply.json())["shops"] == ["cb1"]
    record = await rig.record("tt", "cb1")
    assert record is not None and record.token is not None
    proxied = await rig.client.get("/tt/cb1/order/202309/orders")
    echo = await proxied.json()
    assert proxied.status == 200, echo
    assert echo["headers"]["x-tts-access-token"] == record.token.access_token and CIPHER in echo["query"]
    assert rig.tiktok.stats.token_calls == 1


async def test_shopee_end_to_end_through_the_consent_page(rig):
    reply = await rig.consent(rig.link("sp"))  # the state rides in the redirect URL
    assert reply.status == 200, await reply.text()
    assert (await reply.json())["shops"] == ["1000001"]
    proxied = await rig.client.get("/sp/1000001/api/v2/shop/get_shop_info")
    assert proxied.status == 200, await proxied.text()
    assert rig.shopee.stats.token_calls == 1


async def test_shopee_main_account_consent_stores_every_shop(rig):
    rig.shopee.add_main_account(77, [2001, 2002], [9])
    rig.shopee.consenting = "main_account_id:77"
    reply = await rig.consent(rig.link("sp"))
    assert reply.status == 200, await reply.text()
    assert (await reply.json())["shops"] == ["2001", "2002", "merchant:9"]
    for target in ("/sp/2001/api/v2/shop/get_shop_info", "/sp/merchant:9/api/v2/merchant/get_merchant_info"):
        proxied = await rig.client.get(target)
        assert proxied.status == 200, await proxied.text()
    assert rig.shopee.stats.token_calls == 1 and await rig.record("sp", "main:77") is None


async def test_the_callback_replaces_a_needs_reauthorization_mark(rig):
    key = TokenKey("tt", "cb1")
    marked = TokenRecord(token=None, status=TokenStatus.NEEDS_REAUTHORIZATION, last_error="rt has expired")
    await rig.store.put(key, marked, expected_version=ANY_VERSION)
    refused = await rig.client.get("/tt/cb1/order/202309/orders")
    await problem(refused, 401, "needs_reauthorization")
    reply = await rig.callback("tt", code=rig.tiktok.issue_auth_code(), state=rig.state("tt", "cb1"))
    assert reply.status == 200, await reply.text()
    assert (await rig.client.get("/tt/cb1/order/202309/orders")).status == 200


async def test_a_new_authorization_replaces_the_token_this_process_cached(rig):
    old = rig.tiktok.book.issue_access("TTP_at")[0]
    now = rig.clock.now()
    token = Token(old, expires_at=now + 3600, obtained_at=now, refresh_token=rig.tiktok.seed_refresh_token())
    await rig.store.put(TokenKey("tt", "cb1"), TokenRecord(token=token), expected_version=ANY_VERSION)
    before = await (await rig.client.get("/tt/cb1/order/202309/orders")).json()
    assert before["headers"]["x-tts-access-token"] == old  # now cached in the proxy
    reply = await rig.callback("tt", code=rig.tiktok.issue_auth_code(), state=rig.state("tt", "cb1"))
    assert reply.status == 200, await reply.text()
    after = await (await rig.client.get("/tt/cb1/order/202309/orders")).json()
    record = await rig.record("tt", "cb1")
    assert record is not None and record.token is not None and record.token.access_token != old
    assert after["headers"]["x-tts-access-token"] == record.token.access_token


async def test_client_keys_do_not_apply_the_state_is_the_credential(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores.make(), clock, clients={"app": {"key": "k" * 24}})
    assert (await rig.client.get("/tt/cb1/order/202309/orders")).status == 401  # the proxy needs a key
    reply = await rig.callback("tt", code=rig.tiktok.issue_auth_code(), state=rig.state("tt", "cb1"))
    assert reply.status == 200, await reply.text()


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "forged", "other_secret", "other_app", "expired"])
async def test_a_bad_state_exchanges_nothing(rig, case):
    code = rig.tiktok.issue_auth_code()
    state = {
        "missing": None,
        "forged": rig.state("tt", "cb1")[:-3] + "abc",
        "other_secret": rig.state("tt", "cb1", secret="another-secret-0123456789"),
        "other_app": rig.state("amz", "cb1"),
        "expired": rig.state("tt", "cb1"),
    }[case]
    if case == "expired":
        rig.clock.advance(STATE_LIFETIME)
    query = {"code": code} | ({"state": state} if state is not None else {})
    body = await problem(await rig.callback("tt", **query), 400, "bad_state")
    assert body["app"] == "tt" and code not in str(body)
    assert rig.tiktok.stats.token_calls == 0 and await rig.record("tt", "cb1") is None


async def test_a_declined_consent_or_a_missing_shop_is_authorization_failed(rig):
    declined = await rig.callback("tt", code="null", error="auth_denied", state=rig.state("tt", "cb1"))
    body = await problem(declined, 400, "authorization_failed")
    assert "error=auth_denied" in body["detail"]
    nameless = await rig.callback("tt", code=rig.tiktok.issue_auth_code(), state=rig.state("tt"))
    body = await problem(nameless, 400, "authorization_failed")
    assert "--shop" in body["detail"]
    assert rig.tiktok.stats.token_calls == 0


async def test_a_used_code_is_authorization_failed_and_keeps_the_stored_token(rig):
    state, redirect = rig.link_state("amz")
    query = {"state": state, "spapi_oauth_code": rig.amazon.issue_code(redirect), "selling_partner_id": "A1"}
    assert (await rig.callback("amz", **query)).status == 200
    stored = await rig.record("amz", "A1")
    body = await problem(await rig.callback("amz", **query), 400, "authorization_failed")
    assert "refused the code" in body["detail"] and query["spapi_oauth_code"] not in str(body)
    assert await rig.record("amz", "A1") == stored


async def test_a_failing_token_endpoint_is_refresh_failed(rig):
    rig.amazon.knobs.token_status = 500
    state, redirect = rig.link_state("amz")
    reply = await rig.callback(
        "amz", state=state, spapi_oauth_code=rig.amazon.issue_code(redirect), selling_partner_id="A1"
    )
    await problem(reply, 502, "refresh_failed")
    assert await rig.record("amz", "A1") is None


async def test_unknown_app_is_404(rig):
    await problem(await rig.callback("nope", code="c", state=rig.state("nope")), 404, "unknown_app")


async def test_the_route_is_off_without_public_url(serve, proxy_client, stores, clock):
    rig = await make_rig(serve, proxy_client, stores.make(), clock, public=False)
    code = rig.tiktok.issue_auth_code()
    reply = await rig.callback("tt", code=code, state=sign_state(SECRET, "tt", "cb1", clock.now()))
    await problem(reply, 404, "unknown_app")
    assert rig.tiktok.stats.token_calls == 0 and await rig.record("tt", "cb1") is None
