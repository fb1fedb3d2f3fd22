"""TikTok Shop through the real proxy against the TikTok sandbox: signing, shop_cipher, pass-through."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest

from authproxy.models import FakeClock, Token, TokenKey, TokenRecord
from authproxy.sandbox.tiktok import TikTokSandbox
from authproxy.settings import Settings
from authproxy.store import ANY_VERSION, TokenStore
from tests.conftest import settings_for

APP_KEY, APP_SECRET, CIPHER = "tt-key", "tt-secret", "ROW_shop1"
ORDERS = "/tt/shop1/order/202309/orders"
SHOPS = "/tt/shop1/authorization/202309/shops"


@dataclass
class Rig:
    """A TikTok sandbox, a proxy in front of it, and the proxy's store."""

    sandbox: TikTokSandbox
    client: Any
    store: TokenStore
    clock: FakeClock
    settings: Settings
    sandbox_url: str

    async def seed(
        self, shop: str = "shop1", access: str | None = None, expires_in: float = 3600, **extra: str
    ) -> Token:
        """Store a token as `authproxy tokens set` would, with a refresh token the sandbox knows."""
        now = self.clock.now()
        token = Token(
            access_token=access or self.sandbox.book.issue_access("TTP_at")[0],
            expires_at=now + expires_in,
            obtained_at=now,
            refresh_token=self.sandbox.seed_refresh_token(),
            extra=extra,
        )
        await self.store.put(TokenKey("tt", shop), TokenRecord(token=token), expected_version=ANY_VERSION)
        return token

    async def stored(self, shop: str = "shop1") -> Token:
        record = await self.store.get(TokenKey("tt", shop))
        assert record is not None and record.token is not None
        return record.token


async def start(
    serve: Any,
    proxy_client: Any,
    store: TokenStore,
    clock: FakeClock,
    *,
    secret: str = APP_SECRET,
    shops: dict[str, Any] | None = None,
    sandbox_clock: FakeClock | None = None,
    **server: Any,
) -> Rig:
    sandbox = TikTokSandbox(APP_KEY, APP_SECRET, clock=sandbox_clock or clock, shop_ciphers=(CIPHER,))
    upstream = await serve(sandbox.app())
    base = str(upstream.make_url("")).rstrip("/")
    app = {
        "platform": "tiktok",
        "base_url": base,
        "auth_url": base,
        "app_key": APP_KEY,
        "app_secret": secret,
        "shops": {"shop1": {"shop_cipher": CIPHER}} if shops is None else shops,
    }
    settings = settings_for({"tt": app}, **server)
    client = await proxy_client(settings, store, clock)
    return Rig(sandbox, client, store, clock, settings, base)


def params(echo: dict[str, Any]) -> list[tuple[str, str]]:
    return parse_qsl(echo["query"], keep_blank_values=True)


async def test_get_shops_is_signed_without_shop_cipher(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    token = await rig.seed()
    reply = await rig.client.get(SHOPS)
    echo = await reply.json()
    assert reply.status == 200, echo
    assert echo["code"] == 0
    assert sorted(key for key, _ in params(echo)) == ["app_key", "sign", "timestamp"]
    assert dict(params(echo))["timestamp"] == str(int(clock.now()))
    assert echo["headers"]["x-tts-access-token"] == token.access_token
    assert rig.sandbox.stats.token_calls == 0


async def test_get_orders_carries_the_shop_cipher_after_the_clients_query(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    await rig.seed()
    reply = await rig.client.get(ORDERS + "?page_size=10&sort_field=create_time&empty=")
    echo = await reply.json()
    assert reply.status == 200, echo
    assert echo["query"].startswith("page_size=10&sort_field=create_time&empty=&")
    assert [v for k, v in params(echo) if k == "shop_cipher"] == [CIPHER]


async def test_post_json_is_signed_over_its_exact_bytes(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    await rig.seed()
    body = b'{\n  "order_status" :  "UNPAID",\t"ids":[ 1 ,2 ],"note":"caf\xc3\xa9"\r\n}  '
    reply = await rig.client.post(
        ORDERS + "/search?page_size=5", data=body, headers={"Content-Type": "application/json"}
    )
    echo = await reply.json()
    assert reply.status == 200, echo
    assert echo["method"] == "POST"
    assert (echo["body_sha256"], echo["body_bytes"]) == (hashlib.sha256(body).hexdigest(), len(body))


async def test_multipart_upload_is_not_body_signed(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    await rig.seed()
    form = aiohttp.FormData()
    form.add_field("data", b"\x89PNG" + bytes(range(256)) * 8, filename="a.png", content_type="image/png")
    reply = await rig.client.post("/tt/shop1/product/202309/images/upload", data=form)
    echo = await reply.json()
    assert reply.status == 200, echo
    assert echo["body_bytes"] > 2048
    assert "shop_cipher" not in dict(params(echo))


async def test_client_supplied_auth_is_replaced(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    token = await rig.seed()
    query = "app_key=evil&timestamp=1&sign=forged&access_token=leak&shop_cipher=other&x=1"
    headers = {"x-tts-access-token": "client-token", "Authorization": "Bearer client", "access_token": "leak"}
    reply = await rig.client.get(f"{ORDERS}?{query}", headers=headers)
    echo = await reply.json()
    assert reply.status == 200, echo
    sent = params(echo)
    assert sorted(k for k, _ in sent) == ["app_key", "shop_cipher", "sign", "timestamp", "x"]
    assert dict(sent)["app_key"] == APP_KEY and dict(sent)["shop_cipher"] == CIPHER
    assert echo["headers"]["x-tts-access-token"] == token.access_token
    assert "authorization" not in echo["headers"] and "access_token" not in echo["headers"]


async def test_stored_shop_cipher_is_used_when_the_config_names_none(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock, shops={})
    await rig.seed("shop2", shop_cipher=CIPHER)
    reply = await rig.client.get("/tt/shop2/order/202309/orders")
    echo = await reply.json()
    assert reply.status == 200, echo
    assert dict(params(echo))["shop_cipher"] == CIPHER


async def test_signed_body_over_max_replay_body_is_refused_but_multipart_streams(
    serve, proxy_client, stores, clock
):
    rig = await start(serve, proxy_client, stores.make(), clock, max_replay_body=1024)
    await rig.seed()
    reply = await rig.client.post(
        ORDERS + "/search", data=b"[" + b"1," * 2048 + b"1]", headers={"Content-Type": "application/json"}
    )
    problem = await reply.json(content_type=None)
    assert reply.status == 413 and reply.headers["X-AuthProxy-Error"] == "body_too_large"
    assert problem["code"] == "body_too_large" and problem["app"] == "tt"
    assert rig.sandbox.stats.api_calls == 0
    form = aiohttp.FormData()
    form.add_field("data", bytes(4096), filename="big.bin", content_type="application/octet-stream")
    upload = await rig.client.post("/tt/shop1/product/202309/images/upload", data=form)
    assert upload.status == 200, await upload.text()
    assert (await upload.json())["body_bytes"] > 4096


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("bad_sign", 401, 106001),
        ("scope", 403, 105005),
        ("unexpected_cipher", 400, 36009004),
        ("missing_cipher", 400, 106013),
        ("cipher_mismatch", 401, 101000),
        ("clock_skew", 401, 36009004),
    ],
)
async def test_other_errors_pass_through_unretried(serve, proxy_client, stores, clock, case, status, code):
    shops: dict[str, Any] = {"shop1": {"shop_cipher": CIPHER}}
    path = ORDERS
    options: dict[str, Any] = {}
    if case == "bad_sign":
        options["secret"] = "not-the-secret"
    elif case in ("unexpected_cipher", "missing_cipher"):
        shops = {"shop1": {}}
        path = SHOPS + "?shop_cipher=x" if case == "unexpected_cipher" else ORDERS
    elif case == "cipher_mismatch":
        shops = {"shop1": {"shop_cipher": "ROW_someone_else"}}
    elif case == "clock_skew":
        options["sandbox_clock"] = FakeClock(clock.now() + 400)
    rig = await start(serve, proxy_client, stores.make(), clock, shops=shops, **options)
    if case == "scope":
        rig.sandbox.denied_paths.add("/order/202309/orders")
    await rig.seed()
    reply = await rig.client.get(path)
    body = await reply.json()
    assert (reply.status, body["code"]) == (status, code), body
    assert "X-AuthProxy-Retried" not in reply.headers
    assert rig.sandbox.stats.token_calls == 0
    assert rig.sandbox.stats.rejected_api_calls == 1


async def test_percent_encoded_path_is_signed_decoded(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    await rig.seed()
    reply = await rig.client.get("/tt/shop1/product/202309/products/sku%20one%2B?q=a%20b")
    echo = await reply.json()
    assert reply.status == 200, echo
    assert echo["path"] == "/product/202309/products/sku one+"


async def test_demo_entry_answers_2xx(serve, proxy_client, stores):
    from authproxy.demo import demo_platforms

    entry = next(each for each in demo_platforms() if each.app == "tiktok")
    upstream = await serve(entry.sandbox.app())
    settings = settings_for({entry.app: entry.config(str(upstream.make_url("")).rstrip("/"))})
    client = await proxy_client(settings, stores.make())
    body = b'{"order_status": "UNPAID"}'
    reply = await client.post(
        f"/{entry.app}{entry.curl_path}", data=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 200, await reply.text()
    assert "-d '" + body.decode() + "'" in entry.curl_options
