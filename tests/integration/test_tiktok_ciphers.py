"""TikTok shop_cipher from Get Authorized Shops (issue 15, fix 3): after authorize, on demand, kept."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from urllib.parse import parse_qsl

import pytest

from authproxy.keyring import Keyring
from authproxy.models import Token, TokenKey, TokenRecord
from authproxy.platforms.tiktok import LOOKED_UP
from authproxy.runtime import RUNTIME
from authproxy.sandbox.tiktok import TikTokSandbox
from authproxy.store import ANY_VERSION
from tests.conftest import settings_for, url_of

KEY, SECRET = "tt-key", "tt-secret"
ORDERS = "/order/202309/orders"
KEYRING = Keyring({"k1": b"k" * 32}, "k1")


class Rig:
    def __init__(self, sandbox: TikTokSandbox, client: Any, store: Any) -> None:
        self.sandbox, self.client, self.store = sandbox, client, store

    @property
    def tokens(self) -> Any:
        return self.client.server.app[RUNTIME].apps["tt"].tokens

    async def extra(self, shop: str) -> dict[str, str]:
        record = await self.store.get(TokenKey("tt", shop))
        assert record is not None and record.token is not None
        return dict(record.token.extra)

    async def orders(self, shop: str) -> tuple[int, dict[str, Any]]:
        reply = await self.client.get(f"/tt/{shop}{ORDERS}?page_size=5")
        return reply.status, await reply.json()


@pytest.fixture
async def rig(serve, proxy_client, stores, clock, monkeypatch) -> Rig:
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)
    sandbox = TikTokSandbox(KEY, SECRET, clock=clock)  # every grant: a seller with a shop of its own
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "tiktok", "base_url": base, "auth_url": base, "app_key": KEY, "app_secret": SECRET,
           "shops": {"pinned": {"shop_cipher": "ROW_pinned"}}}  # fmt: skip
    store = stores.make(KEYRING)  # secrets sealed: the cipher, in `extra`, must survive every write
    return Rig(sandbox, await proxy_client(settings_for({"tt": app}), store, clock), store)


def cipher_sent(echo: dict[str, Any]) -> str | None:
    return dict(parse_qsl(echo["query"])).get("shop_cipher")


async def test_authorize_stores_the_sellers_cipher_and_calls_carry_it(rig):
    code = rig.sandbox.issue_auth_code()
    [shop] = rig.sandbox.shops_of(code)
    tokens = await rig.tokens.authorize("s1", code, None)
    assert tokens["s1"].extra["shop_cipher"] == shop["cipher"]
    extra = await rig.extra("s1")
    assert (extra["shop_cipher"], extra["shop_id"], extra["shop_region"]) == (
        shop["cipher"],
        shop["id"],
        "GB",
    )
    assert rig.sandbox.shop_lookups == 1
    status, echo = await rig.orders("s1")
    assert status == 200, echo  # the sandbox checked the cipher is the token's seller's
    assert cipher_sent(echo) == shop["cipher"] and rig.sandbox.shop_lookups == 1


async def test_a_token_without_cipher_gets_it_on_demand_once_and_keeps_it_across_refreshes(rig, clock):
    refresh = rig.sandbox.seed_refresh_token()
    [shop] = rig.sandbox.shops_of(refresh)
    now = clock.now()
    token = Token("expired-at", expires_at=now - 1, obtained_at=now - 3600, refresh_token=refresh)
    await rig.store.put(TokenKey("tt", "s2"), TokenRecord(token=token), expected_version=ANY_VERSION)
    for _ in range(3):
        status, echo = await rig.orders("s2")
        assert status == 200, echo
        assert cipher_sent(echo) == shop["cipher"]
    assert rig.sandbox.shop_lookups == 1 and rig.sandbox.stats.token_calls == 1
    clock.advance(8 * 86400)  # past the access token: refreshed, rotated, CAS-written
    status, echo = await rig.orders("s2")
    assert status == 200 and cipher_sent(echo) == shop["cipher"]
    assert rig.sandbox.stats.token_calls == 2 and rig.sandbox.shop_lookups == 1
    assert (await rig.extra("s2"))["shop_cipher"] == shop["cipher"]


async def test_the_configured_cipher_wins_and_is_never_looked_up(rig):
    await rig.tokens.authorize(
        "pinned", rig.sandbox.issue_auth_code([TikTokSandbox.shop("ROW_pinned")]), None
    )
    status, echo = await rig.orders("pinned")
    assert status == 200 and cipher_sent(echo) == "ROW_pinned"
    assert rig.sandbox.shop_lookups == 0


async def test_a_seller_with_several_shops_is_matched_by_the_shop_segment_or_left_alone(rig):
    first, second = TikTokSandbox.shop("ROW_first", "First"), TikTokSandbox.shop("ROW_second", "Second")
    await rig.tokens.authorize(second["id"], rig.sandbox.issue_auth_code([first, second]), None)
    assert (await rig.extra(second["id"]))["shop_cipher"] == "ROW_second"
    status, echo = await rig.orders(second["id"])
    assert status == 200 and cipher_sent(echo) == "ROW_second"
    await rig.tokens.authorize("vague", rig.sandbox.issue_auth_code([first, second]), None)
    extra = await rig.extra("vague")
    assert "shop_cipher" not in extra and extra[LOOKED_UP] == f"{first['id']} (GB), {second['id']} (GB)"
    status, echo = await rig.orders("vague")
    assert status == 400 and echo["code"] == 106013  # TikTok's own answer: no cipher to send
    assert rig.sandbox.shop_lookups == 2  # the vague shop is not looked up again


async def test_another_sellers_cipher_is_refused_by_the_sandbox(rig):
    await rig.tokens.authorize("s3", rig.sandbox.issue_auth_code(), None)
    reply = await rig.client.get(f"/tt/s3{ORDERS}?shop_cipher=ROW_someone_else")
    assert reply.status == 200  # the proxy's (stored) cipher replaces the client's
    stored = await rig.store.get(TokenKey("tt", "s3"))
    extra = {**stored.token.extra, "shop_cipher": "ROW_someone_else"}
    forged = dataclasses.replace(stored.token, extra=extra)
    await rig.store.put(TokenKey("tt", "s3"), TokenRecord(token=forged), expected_version=ANY_VERSION)
    rig.tokens.cache.forget(TokenKey("tt", "s3"))
    _, echo = await rig.orders("s3")
    assert echo["code"] == 101000  # token and cipher of different sellers


async def test_a_lookup_refused_for_a_bad_token_is_retried_with_the_replays_new_token(rig, clock):
    refresh = rig.sandbox.seed_refresh_token()
    [shop] = rig.sandbox.shops_of(refresh)
    now = clock.now()
    revoked = Token("TTP_at-revoked", expires_at=now + 3600, obtained_at=now, refresh_token=refresh)
    await rig.store.put(TokenKey("tt", "s4"), TokenRecord(token=revoked), expected_version=ANY_VERSION)
    status, echo = await rig.orders("s4")  # lookup refused; call refused; refresh; lookup; replay
    assert status == 200, echo
    assert cipher_sent(echo) == shop["cipher"]
    assert rig.sandbox.shop_lookups == 1 and rig.sandbox.stats.token_calls == 1
    assert (await rig.extra("s4"))["shop_cipher"] == shop["cipher"]


async def test_while_the_shops_lock_is_held_the_cipher_is_used_and_stored_later(rig, clock):
    refresh = rig.sandbox.seed_refresh_token()
    [shop] = rig.sandbox.shops_of(refresh)
    now = clock.now()
    token = Token(rig.sandbox.book.issue_access("TTP_at")[0], now + 3600, now, refresh_token=refresh)
    rig.sandbox.grant_of[token.access_token] = rig.sandbox.grant_of[refresh]
    key = TokenKey("tt", "s5")
    await rig.store.put(key, TokenRecord(token=token), expected_version=ANY_VERSION)
    lock = rig.store.lock(key, 30)  # a refresh under way elsewhere
    assert await lock.acquire()
    status, echo = await rig.orders("s5")
    assert status == 200 and cipher_sent(echo) == shop["cipher"]  # looked up, used...
    assert "shop_cipher" not in await rig.extra("s5")  # ...not written under another's lock
    await lock.release()
    status, echo = await rig.orders("s5")  # within STORE_RETRY: the kept details, no new lookup
    assert status == 200 and cipher_sent(echo) == shop["cipher"]
    clock.advance(6)
    status, echo = await rig.orders("s5")
    assert status == 200 and (await rig.extra("s5"))["shop_cipher"] == shop["cipher"]
    assert rig.sandbox.shop_lookups == 1
