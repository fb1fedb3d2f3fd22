"""Shared set-up for the Shopee integration tests (no tests here).

A Shopee sandbox served on loopback, the real proxy app in front of it, and
shop tokens minted by the sandbox and written to the store the proxy uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from authproxy.models import FakeClock, Token, TokenKey, TokenRecord
from authproxy.platforms.shopee import base_string, sign
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.store import TokenStore
from tests.conftest import settings_for

PARTNER_ID = 2001887
KEY = "shpk-test-partner-key-0123456789abcdef"
SHOP = "14701711"
APP = "sp"


@dataclass
class Rig:
    sandbox: ShopeeSandbox
    server: TestServer
    client: TestClient[Any, Any]
    store: TokenStore
    clock: FakeClock

    @property
    def sandbox_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def seed(self, shop: str = SHOP) -> Token:
        """A first pair from the sandbox, stored as `authproxy authorize` would."""
        pair = self.sandbox.mint(shop)
        now = self.clock.now()
        token = Token(
            access_token=pair["access_token"],
            expires_at=now + pair["expire_in"],
            obtained_at=now,
            refresh_token=pair["refresh_token"],
            refresh_expires_at=now + 30 * 86400,
        )
        record = TokenRecord(token=token, last_refresh=now)
        await self.store.put(TokenKey(APP, shop), record, expected_version=0)
        return token

    async def stored(self, shop: str = SHOP) -> TokenRecord | None:
        return await self.store.get(TokenKey(APP, shop))

    def raw_url(self, target: str) -> URL:
        """The proxy URL for `target`, sent byte for byte (no client-side re-encoding)."""
        return URL(str(self.client.make_url("")).rstrip("/") + target, encoded=True)

    async def expire_upstream(self) -> None:
        """What an operator (or another process) would do: POST /_sandbox/expire."""
        async with self.client.session.post(self.sandbox_url + "/_sandbox/expire") as reply:
            assert reply.status == 200


async def make_rig(
    serve: Any,
    proxy_client: Any,
    stores: Any,
    clock: FakeClock,
    *,
    prefix: str = "",
    partner_key: str = KEY,
    lifetime: float = 14400,
    seeded_shops: tuple[str, ...] = (),
    **app: Any,
) -> Rig:
    """`seeded_shops` get a first refresh token in the config, not in the store."""
    sandbox = ShopeeSandbox(PARTNER_ID, KEY, clock=clock, lifetime=lifetime, prefix=prefix)
    server = await serve(sandbox.app())
    config = {
        "platform": "shopee",
        "base_url": str(server.make_url("")).rstrip("/") + prefix,
        "partner_id": PARTNER_ID,
        "partner_key": partner_key,
        "shops": {shop: {"refresh_token": sandbox.mint(shop)["refresh_token"]} for shop in seeded_shops},
        **app,
    }
    store = stores.make()
    client = await proxy_client(settings_for({APP: config}), store, clock)
    return Rig(sandbox, server, client, store, clock)


def params(raw_query: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        found.setdefault(key, []).append(value)
    return found


def public_sign(path: str, timestamp: int) -> str:
    return sign(KEY, base_string(PARTNER_ID, path, timestamp))
