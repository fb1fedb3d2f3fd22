"""`authproxy authorize-url` and `authproxy authorize` as users run them: a subprocess on a
shared Redis, against the Amazon and TikTok sandboxes served by the test process; then
the proxy (on the same Redis) uses what was stored without another token call."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from authproxy.authorize import STATE_LIFETIME, verify_state
from authproxy.models import TokenKey, TokenRecord, TokenStatus
from authproxy.sandbox.amazon import AmazonSandbox
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.sandbox.shoptet import ShoptetSandbox
from authproxy.sandbox.tiktok import TikTokSandbox
from authproxy.settings import Settings
from authproxy.store import ANY_VERSION
from tests.conftest import shared_store, url_of
from tests.procs import ROOT, to_toml

AMZ_ID, AMZ_SECRET = "amzn1.application-oa2-client.cli", "amzn1.oa2-cs.v1.cli-secret-never-shown"
APPLICATION_ID = "amzn1.sp.solution.cli-test"
TT_KEY, TT_SECRET, CIPHER = "tt-key", "tt-secret-never-shown", "ROW_cli1"
REDIRECT = "https://app.example/amazon/callback"
STATE_SECRET = "cli-state-secret-0123456789"
SP_PARTNER, SP_KEY = 2001887, "shpk-cli-partner-key-never-shown"
SP_REDIRECT = "https://app.example/shopee/callback?from=authproxy"
ST_ID, ST_SECRET, ST_INSTALL = "addon-cli", "addon-secret-never-shown", "https://addon.example/install"
ORDERS = "/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER"
TT_ORDERS = "/order/202309/orders"


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def cli(*args: str, config: Path, stdin: str = "") -> Done:
    """The CLI in its own process; awaited, so the sandboxes in this loop keep answering."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "authproxy",
        *args,
        "--config",
        str(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


@dataclass
class Rig:
    amazon: AmazonSandbox
    tiktok: TikTokSandbox
    shopee: ShopeeSandbox
    shoptet: ShoptetSandbox
    apps: dict[str, Any]
    server: dict[str, Any]
    config: Path
    store: Any

    def settings(self) -> Settings:
        return Settings(server={"store_url": "memory://"}, apps=self.apps)

    async def record(self, app: str, shop: str) -> TokenRecord:
        found = await self.store.get(TokenKey(app, shop))
        assert found is not None
        return found


async def rig_for(serve: Any, shared_redis: Any, tmp_path: Path, **server: Any) -> Rig:
    amazon = AmazonSandbox(AMZ_ID, AMZ_SECRET)
    tiktok = TikTokSandbox(
        TT_KEY, TT_SECRET, shop_ciphers=(CIPHER,)
    )  # the seller's shop: the config's cipher
    shopee = ShopeeSandbox(SP_PARTNER, SP_KEY)
    shoptet = ShoptetSandbox(ST_ID, ST_SECRET, redirect_uri=ST_INSTALL)
    st_url = url_of(await serve(shoptet.app()))
    amz_url = url_of(await serve(amazon.app()))
    tt_url = url_of(await serve(tiktok.app()))
    sp_url = url_of(await serve(shopee.app()))
    apps = {
        "amz": {
            "platform": "amazon",
            "base_url": amz_url,
            "auth_url": amz_url,
            "client_id": AMZ_ID,
            "client_secret": AMZ_SECRET,
            "application_id": APPLICATION_ID,
        },
        "tt": {
            "platform": "tiktok",
            "base_url": tt_url,
            "auth_url": tt_url,
            "app_key": TT_KEY,
            "app_secret": TT_SECRET,
            "service_id": "7001",
            "shops": {"cli1": {"shop_cipher": CIPHER}},
        },
        "sp": {"platform": "shopee", "base_url": sp_url, "partner_id": SP_PARTNER, "partner_key": SP_KEY},
        "st": {
            "platform": "shoptet",
            "base_url": st_url,
            "auth_url": st_url,
            "client_id": ST_ID,
            "client_secret": ST_SECRET,
            "redirect_uri": ST_INSTALL,
        },
        "crm": {
            "platform": "oauth2",
            "base_url": "https://api.example",
            "token_url": "https://api.example/t",
            "client_id": "c",
        },
    }
    server = {"store_url": shared_redis.url, "key_prefix": shared_redis.prefix, **server}
    config = tmp_path / "authproxy.toml"
    config.write_text(to_toml({"server": server, "apps": apps}))
    return Rig(amazon, tiktok, shopee, shoptet, apps, server, config, shared_store(shared_redis))


@pytest.fixture
async def rig(serve, shared_redis, tmp_path):
    made = await rig_for(serve, shared_redis, tmp_path)
    yield made
    await made.store.close()


def query_of(link: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(link).query)


def printed(done: Done, label: str) -> str:
    """The value of a `label: value` line the CLI printed."""
    return next(line.split(":", 1)[1].strip() for line in done.stdout.splitlines() if line.startswith(label))


# -- authorize-url ---------------------------------------------------------------------------


async def test_amazon_link_carries_application_id_state_and_redirect(rig):
    done = await cli("authorize-url", "amz", "--redirect", REDIRECT, "--state", "check-me", config=rig.config)
    assert done.returncode == 0, done.stderr
    link = done.stdout.splitlines()[0]
    assert link.startswith("https://sellercentral.amazon.com/apps/authorize/consent?")
    assert query_of(link) == {
        "application_id": [APPLICATION_ID],
        "state": ["check-me"],
        "redirect_uri": [REDIRECT],
    }
    assert printed(done, "state") == "check-me" and printed(done, "redirect") == REDIRECT


async def test_a_random_state_is_printed_and_differs_each_time(rig):
    first, second = [await cli("authorize-url", "tt", config=rig.config) for _ in range(2)]
    states = []
    for done in (first, second):
        assert done.returncode == 0, done.stderr
        link = done.stdout.splitlines()[0]
        assert link.startswith("https://services.tiktokshop.com/open/authorize?")
        assert query_of(link)["service_id"] == ["7001"]
        states.append(printed(done, "state"))
        assert query_of(link)["state"] == [states[-1]] and len(states[-1]) >= 20
    assert states[0] != states[1]


async def consent(link: str) -> dict[str, list[str]]:
    """Open a consent link the way a seller's browser does: the query it is sent back with."""
    async with aiohttp.ClientSession() as session, session.get(link, allow_redirects=False) as reply:
        assert reply.status == 302, await reply.text()
        return parse_qs(urlsplit(reply.headers["Location"]).query)


async def test_shopee_link_consent_code_then_a_proxied_call(rig, proxy_client):
    done = await cli("authorize-url", "sp", "--redirect", SP_REDIRECT, config=rig.config)
    assert done.returncode == 0, done.stderr
    back = await consent(done.stdout.splitlines()[0])  # the sandbox's consent page, signed link
    assert back["state"] == [printed(done, "state")] and back["from"] == ["authproxy"]
    assert back["shop_id"] == ["1000001"]
    code = back["code"][0]
    stored = await cli("authorize", "sp", "1000001", "--code", code, config=rig.config)
    assert stored.returncode == 0, stored.stderr
    token = (await rig.record("sp", "1000001")).token
    assert token is not None
    for secret in (token.access_token, token.refresh_token, SP_KEY, code):
        assert secret not in stored.output + done.output
    client = await proxy_client(rig.settings(), rig.store)
    reply = await client.get("/sp/1000001/api/v2/shop/get_shop_info")
    assert reply.status == 200, await reply.text()
    assert rig.shopee.stats.token_calls == 1


async def test_shopee_main_account_code_stores_every_shop_and_merchant(rig, proxy_client):
    rig.shopee.add_main_account(77, [2001, 2002], [9])
    code = rig.shopee.issue_code("main_account_id:77")
    done = await cli("authorize", "sp", "main:77", "--code", code, config=rig.config)
    assert done.returncode == 0, done.stderr
    assert "authorized 3 shop(s) of sp" in done.stdout
    assert {"sp/2001", "sp/2002", "sp/merchant:9"} <= set(done.stdout.split())
    tokens = {shop: (await rig.record("sp", shop)).token for shop in ("2001", "2002", "merchant:9")}
    assert len({token.access_token for token in tokens.values() if token}) == 1  # one shared first pair
    assert await rig.store.get(TokenKey("sp", "main:77")) is None
    client = await proxy_client(rig.settings(), rig.store)
    for target in (
        "/sp/2001/api/v2/shop/get_shop_info",
        "/sp/2002/api/v2/order/get_order_list?page_size=5",
        "/sp/merchant:9/api/v2/merchant/get_merchant_info",
    ):
        reply = await client.get(target)
        assert reply.status == 200, await reply.text()
    assert rig.shopee.stats.token_calls == 1


async def test_shoptet_install_code_becomes_the_oauth_token_then_a_proxied_call(rig, proxy_client):
    code = rig.shoptet.install_code(222651)
    done = await cli("authorize", "st", "222651", "--code", code, config=rig.config)
    assert done.returncode == 0, done.stderr
    token = (await rig.record("st", "222651")).token
    assert token is not None and token.refresh_token in rig.shoptet.oauth_tokens  # the permanent OAuth token
    assert token.extra["eshop_id"] == "222651" and "eshop_id: 222651" in done.stdout
    for secret in (token.refresh_token, ST_SECRET, code):
        assert secret not in done.output
    client = await proxy_client(rig.settings(), rig.store)
    reply = await client.get("/st/222651/api/eshop")
    body = await reply.json()
    assert reply.status == 200, body
    assert body["eshopId"] == 222651
    # the install exchange, then the first 30-minute API token; none for a second call
    assert rig.shoptet.stats.token_calls == 2
    assert (await client.get("/st/222651/api/products")).status == 200
    assert rig.shoptet.stats.token_calls == 2
    again = await cli("authorize", "st", "222651", "--code", code, config=rig.config)
    assert again.returncode == 1 and "refused the code" in again.stderr and code not in again.output


async def test_platforms_without_a_consent_link_exit_2(rig):
    done = await cli("authorize-url", "crm", config=rig.config)
    assert done.returncode == 2
    assert "oauth2 has no seller consent link" in done.stderr and "Traceback" not in done.output
    shoptet = await cli("authorize-url", "st", config=rig.config)
    assert shoptet.returncode == 2 and "shoptet has no consent link" in shoptet.stderr
    unknown = await cli("authorize-url", "nope", config=rig.config)
    assert unknown.returncode == 2 and "no app named 'nope'" in unknown.stderr


async def test_with_public_url_the_link_returns_to_the_callback_with_a_signed_state(
    serve, shared_redis, tmp_path
):
    public = {"public_url": "https://proxy.example", "state_secret": STATE_SECRET}
    rig = await rig_for(serve, shared_redis, tmp_path, **public)
    try:
        done = await cli("authorize-url", "amz", "--shop", "seller-eu", config=rig.config)
        assert done.returncode == 0, done.stderr
        callback = "https://proxy.example/_authproxy/oauth/amz/callback"
        link = done.stdout.splitlines()[0]
        assert query_of(link)["redirect_uri"] == [callback] and printed(done, "redirect") == callback
        state = query_of(link)["state"][0]
        assert printed(done, "state") == state
        claims = verify_state(STATE_SECRET, state, "amz", rig.amazon.clock.now())
        assert claims.shop == "seller-eu"
        assert claims.expires_at - rig.amazon.clock.now() == pytest.approx(STATE_LIFETIME, abs=60)
        assert "valid until" in done.stdout and STATE_SECRET not in done.output
        # a state of one's own cannot be checked by the callback
        own = await cli("authorize-url", "amz", "--state", "mine", config=rig.config)
        assert own.returncode == 2 and "--state" in own.stderr
        # with --redirect the operator's own page gets the code: a plain state again
        mine = await cli("authorize-url", "amz", "--redirect", REDIRECT, "--state", "mine", config=rig.config)
        assert mine.returncode == 0 and query_of(mine.stdout.splitlines()[0])["state"] == ["mine"]
    finally:
        await rig.store.close()


async def test_shop_needs_the_callback(rig):
    done = await cli("authorize-url", "amz", "--shop", "s1", config=rig.config)
    assert done.returncode == 2 and "public_url" in done.stderr


# -- authorize --code ----------------------------------------------------------------------------


async def test_amazon_code_is_exchanged_stored_and_used_by_the_proxy(rig, proxy_client):
    code = rig.amazon.issue_code(REDIRECT)
    done = await cli(
        "authorize", "amz", "newseller", "--code", code, "--redirect", REDIRECT, config=rig.config
    )
    assert done.returncode == 0, done.stderr
    assert rig.amazon.token_requests[-1]["grant_type"] == "authorization_code"
    assert rig.amazon.token_requests[-1]["redirect_uri"] == REDIRECT
    record = await rig.record("amz", "newseller")
    token = record.token
    assert token is not None and token.refresh_token is not None
    assert record.status is TokenStatus.OK and record.last_refresh == token.obtained_at
    assert "authorized 1 shop(s) of amz" in done.stdout and "amz/newseller" in done.stdout
    assert (
        f"****{token.access_token[-4:]}" in done.stdout and f"****{token.refresh_token[-4:]}" in done.stdout
    )
    for secret in (token.access_token, token.refresh_token, AMZ_SECRET, code):
        assert secret not in done.output
    client = await proxy_client(rig.settings(), rig.store)
    reply = await client.get("/amz/newseller" + ORDERS)
    assert reply.status == 200, await reply.text()
    assert (await reply.json())["headers"]["x-amz-access-token"] == token.access_token
    assert rig.amazon.stats.token_calls == 1  # the exchange only: the proxy used the stored token


async def test_tiktok_code_from_stdin_is_exchanged_and_used_by_the_proxy(rig, proxy_client):
    code = rig.tiktok.issue_auth_code()
    done = await cli("authorize", "tt", "cli1", "--code", "-", config=rig.config, stdin=code + "\n")
    assert done.returncode == 0, done.stderr
    token = (await rig.record("tt", "cli1")).token
    assert token is not None and token.refresh_token in rig.tiktok.book.refresh
    assert "seller_name: Sandbox Seller" in done.stdout
    for secret in (token.access_token, token.refresh_token, TT_SECRET, code):
        assert secret not in done.output
    client = await proxy_client(rig.settings(), rig.store)
    reply = await client.get("/tt/cli1" + TT_ORDERS)
    echo = await reply.json()
    assert reply.status == 200, echo
    assert echo["headers"]["x-tts-access-token"] == token.access_token and CIPHER in echo["query"]
    assert rig.tiktok.stats.token_calls == 1


async def test_tiktok_authorize_looks_up_the_cipher_of_a_shop_the_config_does_not_name(rig, proxy_client):
    done = await cli("authorize", "tt", "fresh", "--code", rig.tiktok.issue_auth_code(), config=rig.config)
    assert done.returncode == 0, done.stderr
    assert f"shop_cipher: {CIPHER}" in done.stdout  # the seller's shop, from Get Authorized Shops
    assert rig.tiktok.shop_lookups == 1
    token = (await rig.record("tt", "fresh")).token
    assert token is not None and token.extra["shop_cipher"] == CIPHER
    client = await proxy_client(rig.settings(), rig.store)
    reply = await client.get("/tt/fresh" + TT_ORDERS)
    echo = await reply.json()
    assert reply.status == 200, echo
    assert f"shop_cipher={CIPHER}" in echo["query"] and rig.tiktok.shop_lookups == 1


async def test_authorizing_again_replaces_a_needs_reauthorization_mark(rig, proxy_client):
    key = TokenKey("amz", "lost")
    marked = TokenRecord(token=None, status=TokenStatus.NEEDS_REAUTHORIZATION, last_error="invalid_grant")
    await rig.store.put(key, marked, expected_version=ANY_VERSION)
    client = await proxy_client(rig.settings(), rig.store)
    refused = await client.get("/amz/lost" + ORDERS)
    assert (refused.status, refused.headers["X-AuthProxy-Error"]) == (401, "needs_reauthorization")
    done = await cli("authorize", "amz", "lost", "--code", rig.amazon.issue_code(), config=rig.config)
    assert done.returncode == 0, done.stderr
    record = await rig.record("amz", "lost")
    assert record.status is TokenStatus.OK and not record.last_error and record.version == 2
    reply = await client.get("/amz/lost" + ORDERS)
    assert reply.status == 200, await reply.text()


@pytest.mark.parametrize("platform", ["amz", "tt"])
async def test_a_used_code_is_a_clear_error_without_secrets(rig, platform):
    code = rig.amazon.issue_code() if platform == "amz" else rig.tiktok.issue_auth_code()
    first = await cli("authorize", platform, "s1", "--code", code, config=rig.config)
    assert first.returncode == 0, first.stderr
    stored = await rig.record(platform, "s1")
    again = await cli("authorize", platform, "s1", "--code", code, config=rig.config)
    assert again.returncode == 1
    assert "the platform refused the code" in again.stderr and "Traceback" not in again.output
    for secret in (code, AMZ_SECRET, TT_SECRET):
        assert secret not in again.output
    assert await rig.record(platform, "s1") == stored  # the stored token is untouched


async def test_a_failing_token_endpoint_is_a_clear_error(rig):
    rig.amazon.knobs.token_status = 503
    done = await cli("authorize", "amz", "s1", "--code", rig.amazon.issue_code(), config=rig.config)
    assert done.returncode == 1 and "the code exchange failed" in done.stderr
    assert await rig.store.get(TokenKey("amz", "s1")) is None


async def test_platforms_without_a_code_exchange_and_bad_arguments_exit_2(rig):
    done = await cli("authorize", "crm", "s1", "--code", "abc", config=rig.config)
    assert done.returncode == 2 and "has no authorization-code exchange" in done.stderr
    empty = await cli("authorize", "amz", "s1", "--code", "-", config=rig.config, stdin="\n")
    assert empty.returncode == 2 and "give the authorization code" in empty.stderr
    bad_shop = await cli("authorize", "amz", "../x", "--code", "abc", config=rig.config)
    assert bad_shop.returncode == 2 and "shop name must match" in bad_shop.stderr
    assert rig.amazon.stats.token_calls == 0
