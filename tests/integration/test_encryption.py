"""Tokens sealed in Redis: bound to their shop, plain records adopted, unknown keys refused.

The real proxy app in front of the Shopee sandbox (which checks that an access
token belongs to the shop it is used for), on fakeredis and on real Redis.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestServer

from authproxy import cli
from authproxy.app import create_app
from authproxy.errors import ConfigError
from authproxy.keyring import Keyring, key_id_of
from authproxy.models import FakeClock, Token, TokenKey, TokenRecord
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.store import TokenStore
from authproxy.store.codec import encode, sealed_with
from authproxy.store.redis import RedisStore
from tests.conftest import REDIS_URL, StoreFactory, need_real_redis, settings_for, url_of
from tests.integration.test_shopee_kit import KEY, PARTNER_ID
from tests.procs import to_toml

K1, K2 = bytes(range(32)), bytes(range(100, 132))
APP, SHOP_A, SHOP_B = "sp", "1001", "1002"
PATH = "/api/v2/shop/get_shop_info"


def keyring(*ids: str, active: str | None = None) -> Keyring:
    keys = {"k1": K1, "k2": K2}
    return Keyring({kid: keys[kid] for kid in ids}, active or ids[-1])


def key_line(*ids: str) -> str:
    keys = {"k1": K1, "k2": K2}
    return ",".join(f"{kid}:{base64.b64encode(keys[kid]).decode()}" for kid in ids)


class Upstream:
    """The Shopee sandbox, plus a record of which access token reached it for which shop."""

    def __init__(self, clock: FakeClock) -> None:
        self.sandbox = ShopeeSandbox(PARTNER_ID, KEY, clock=clock)
        self.seen: list[tuple[str, str]] = []  # (shop_id, access_token)

    def app(self) -> web.Application:
        app = self.sandbox.app()

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            query = request.rel_url.query
            if "shop_id" in query:
                self.seen.append((query["shop_id"], query.get("access_token", "")))
            return await handler(request)  # type: ignore[no-any-return]

        app.middlewares.append(record)
        return app

    async def seed(self, store: TokenStore, shop: str, clock: FakeClock) -> Token:
        pair = self.sandbox.mint(shop)
        now = clock.now()
        token = Token(pair["access_token"], now + pair["expire_in"], now, pair["refresh_token"], now + 86400)
        await store.put(TokenKey(APP, shop), TokenRecord(token=token, last_refresh=now), expected_version=0)
        return token


def shopee_app(base: str) -> dict[str, Any]:
    return {APP: {"platform": "shopee", "base_url": base, "partner_id": PARTNER_ID, "partner_key": KEY}}


def metric(page: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in page.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_an_envelope_copied_to_another_shop_answers_secret_undecryptable(
    redis_stores: StoreFactory, serve, proxy_client, clock, logs
):
    upstream = Upstream(clock)
    base = url_of(await serve(upstream.app()))
    store = redis_stores.make(keyring("k1"))
    assert isinstance(store, RedisStore)
    token_a = await upstream.seed(store, SHOP_A, clock)
    token_b = await upstream.seed(store, SHOP_B, clock)
    client = await proxy_client(settings_for(shopee_app(base), token_cache_seconds=0), store, clock)
    for shop in (SHOP_A, SHOP_B):
        assert (await client.get(f"/{APP}/{shop}{PATH}")).status == 200
    assert upstream.seen == [(SHOP_A, token_a.access_token), (SHOP_B, token_b.access_token)]

    name_a, name_b = (store._name("token", TokenKey(APP, shop)) for shop in (SHOP_A, SHOP_B))
    record_a = await store.client.hget(name_a, "data")
    original_b = await store.client.hget(name_b, "data")
    sealed_b = json.loads(original_b)
    sealed_b["token"]["sealed"] = json.loads(record_a)["token"]["sealed"]
    for copied in (record_a, json.dumps(sealed_b)):  # the whole record, then its envelope
        await store.client.hset(name_b, "data", copied)
        calls = upstream.sandbox.stats.api_calls
        reply = await client.get(f"/{APP}/{SHOP_B}{PATH}")
        text = await reply.text()
        assert reply.status == 500, text
        assert reply.headers["X-AuthProxy-Error"] == "secret_undecryptable"
        problem = json.loads(text)
        assert (problem["code"], problem["shop"]) == ("secret_undecryptable", SHOP_B)
        assert token_a.access_token not in text and token_a.refresh_token not in text  # type: ignore[operator]
        assert upstream.sandbox.stats.api_calls == calls  # nothing went upstream
    assert (SHOP_B, token_a.access_token) not in upstream.seen
    page = await (await client.get("/_authproxy/metrics")).text()
    assert metric(page, "authproxy_decrypt_failures_total", app=APP, reason="mismatch") == 2.0
    assert logs.text().count("secret_undecryptable") >= 2
    assert token_a.access_token not in logs.text()

    await store.client.hset(name_b, "data", original_b)  # put back: B is served again
    assert (await client.get(f"/{APP}/{SHOP_B}{PATH}")).status == 200


async def test_a_plain_record_is_served_and_sealed_by_its_next_write(
    redis_stores: StoreFactory, serve, proxy_client, clock
):
    upstream = Upstream(clock)
    base = url_of(await serve(upstream.app()))
    plain_store = redis_stores.make()  # written before the keyring existed
    token = await upstream.seed(plain_store, SHOP_A, clock)
    store = redis_stores.make(keyring("k1"))
    assert isinstance(store, RedisStore)
    client = await proxy_client(settings_for(shopee_app(base)), store, clock)
    name = store._name("token", TokenKey(APP, SHOP_A))
    assert sealed_with(await store.client.hget(name, "data")) == {""}
    assert (await client.get(f"/{APP}/{SHOP_A}{PATH}")).status == 200
    assert upstream.seen == [(SHOP_A, token.access_token)]

    clock.advance(4 * 3600)  # expired: the proxy refreshes, and writes the new pair sealed
    assert (await client.get(f"/{APP}/{SHOP_A}{PATH}")).status == 200
    raw = await store.client.hget(name, "data")
    assert sealed_with(raw) == {"k1"}
    stored = await store.get(TokenKey(APP, SHOP_A))
    assert stored is not None and stored.token is not None
    assert stored.token.refresh_token not in raw.decode() and stored.token.access_token not in raw.decode()


async def test_start_up_refuses_a_record_under_a_key_it_lacks(redis_stores: StoreFactory, clock):
    newer = redis_stores.make(keyring("k1", "k2"))
    await newer.put(TokenKey(APP, SHOP_A), TokenRecord(token=Token("at", None, 0.0)), expected_version=0)
    settings = settings_for(shopee_app("http://127.0.0.1:9"))

    async def start(store: TokenStore) -> None:
        server = TestServer(create_app(settings, clock=clock, store=store))
        try:
            await server.start_server()
        finally:
            await server.close()

    with pytest.raises(ConfigError) as refused:
        await start(redis_stores.make(keyring("k1")))
    message = str(refused.value)
    assert "key 'k2'" in message and f"{APP}/{SHOP_A}" in message and "the keyring has k1" in message
    assert base64.b64encode(K2).decode() not in message and base64.b64encode(K1).decode() not in message
    with pytest.raises(ConfigError, match="no keyring is configured"):
        await start(redis_stores.make())
    await start(redis_stores.make(keyring("k2")))


async def test_without_a_keyring_start_up_says_once_that_tokens_are_unencrypted(
    redis_stores: StoreFactory, proxy_client, clock, logs
):
    await proxy_client(settings_for(shopee_app("http://127.0.0.1:9")), redis_stores.make(), clock)
    assert logs.text().count("tokens are stored unencrypted") == 1
    await proxy_client(
        settings_for(shopee_app("http://127.0.0.1:9")), redis_stores.make(keyring("k1")), clock
    )
    assert logs.text().count("tokens are stored unencrypted") == 1
    assert "tokens are sealed with key k1" in logs.text()


def test_tokens_commands_refuse_an_unknown_key_id_and_delete_still_works(tmp_path, monkeypatch, capsys):
    need_real_redis()
    prefix = f"test-{tmp_path.name[-12:]}"
    client = redis.Redis.from_url(REDIS_URL)
    key = TokenKey(APP, SHOP_A)
    data = encode(
        TokenRecord(token=Token("at-0123456789-xyz1", None, 0.0, "rt-0123456789-xyz2")), key, keyring("k2")
    )
    # under its name from before hash tags: the store adopts it (names.py)
    client.hset(f"{prefix}:token:{APP}:{SHOP_A}", mapping={"v": 1, "data": data})
    config = tmp_path / "authproxy.toml"
    server = {"store_url": REDIS_URL, "key_prefix": prefix}
    config.write_text(to_toml({"server": server, "apps": shopee_app("http://127.0.0.1:9")}))
    monkeypatch.setenv("AUTHPROXY_KEYS", key_line("k1"))
    try:
        for command in (["tokens", "list"], ["tokens", "show", APP, SHOP_A], ["keys", "rotate"]):
            assert cli.main([*command, "--config", str(config)]) == 2
            err = capsys.readouterr().err
            assert "key 'k2'" in err and base64.b64encode(K1).decode() not in err, err
        assert cli.main(["keys", "rotate", "--dry-run", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert "1 stored record(s) by key: k2 1" in out and "not in the keyring (cannot be opened): k2" in out
        monkeypatch.setenv("AUTHPROXY_KEYS", key_line("k1", "k2"))
        monkeypatch.setenv("AUTHPROXY_SERVER__ACTIVE_KEY", "k1")
        assert cli.main(["tokens", "show", APP, SHOP_A, "--config", str(config)]) == 0
        assert "****xyz2" in capsys.readouterr().out
        assert cli.main(["keys", "rotate", "--config", str(config)]) == 0
        assert "every record is under k1" in capsys.readouterr().out
        stored = client.hget(f"{prefix}:token:{{{APP}:{SHOP_A}}}", "data")
        assert key_id_of(json.loads(stored)["token"]["sealed"]) == "k1"
        monkeypatch.setenv("AUTHPROXY_KEYS", key_line("k2"))
        monkeypatch.delenv("AUTHPROXY_SERVER__ACTIVE_KEY")
        assert cli.main(["tokens", "delete", APP, SHOP_A, "--config", str(config)]) == 0  # no check
    finally:
        for name in client.scan_iter(match=f"{prefix}:*"):
            client.delete(name)
        client.close()
