"""`authproxy demo`: every sandbox plus a proxy configured against them.

No Redis, no marketplace account: the memory store, sandbox tokens that
expire in about a minute (so a refresh shows up in the log), and one
ready-to-paste curl line per platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from authproxy import http_server
from authproxy.app import create_app
from authproxy.logs import setup_logging
from authproxy.sandbox.base import Sandbox
from authproxy.settings import Settings

log = logging.getLogger("authproxy.demo")
DEMO_LIFETIME = 60.0


@dataclass
class DemoPlatform:
    """One platform in the demo: its sandbox, its app config, its curl line."""

    app: str
    sandbox: Sandbox
    config: Callable[[str], dict[str, Any]]  # sandbox base URL -> [apps.<app>] table
    curl_path: str  # /<shop>/<path>, after /<app>
    curl_options: str = ""


def demo_platforms() -> list[DemoPlatform]:
    from authproxy.sandbox.amazon import AmazonSandbox
    from authproxy.sandbox.oauth2 import OAuth2Sandbox
    from authproxy.sandbox.sellercenter import SellerCenterSandbox
    from authproxy.sandbox.shopee import ShopeeSandbox
    from authproxy.sandbox.shoptet import ShoptetSandbox
    from authproxy.sandbox.tiktok import TikTokSandbox

    oauth2 = OAuth2Sandbox("demo-client", "demo-client-secret", lifetime=DEMO_LIFETIME)
    seed = oauth2.seed_refresh_token()
    shopee = ShopeeSandbox(2001887, "demo-partner-key", lifetime=DEMO_LIFETIME)
    shopee_seed = shopee.mint("1000001")["refresh_token"]
    amazon = AmazonSandbox("amzn1.application-oa2-client.demo", "demo-lwa-secret", lifetime=DEMO_LIFETIME)
    amazon_seed = amazon.seed_refresh_token()
    tiktok = TikTokSandbox(
        "demo-app-key", "demo-app-secret", lifetime=DEMO_LIFETIME, shop_ciphers=("ROW_demo",)
    )
    tiktok_seed = tiktok.seed_refresh_token()
    shoptet = ShoptetSandbox(lifetime=DEMO_LIFETIME)
    shoptet_oauth = shoptet.seed_oauth_token()
    return [
        DemoPlatform(
            "zalora",
            SellerCenterSandbox({"demo-app": "demo-app-secret"}, lifetime=DEMO_LIFETIME),
            lambda url: {
                "platform": "sellercenter",
                "base_url": url,
                "client_id": "demo-app",
                "client_secret": "demo-app-secret",
            },
            "/demo-shop/v2/products?limit=10",
        ),
        DemoPlatform(
            "crm",
            oauth2,
            lambda url: {
                "platform": "oauth2",
                "base_url": url,
                "token_url": url + "/oauth/token",
                "grant_type": "refresh_token",
                "client_id": "demo-client",
                "client_secret": "demo-client-secret",
                "shops": {"acme": {"refresh_token": seed}},
            },
            "/acme/api/contacts",
            "-X POST -H 'Content-Type: application/json' -d '{\"name\": \"Ada\"}' ",
        ),
        DemoPlatform(
            "shopee",
            shopee,
            lambda url: {
                "platform": "shopee",
                "base_url": url,
                "partner_id": 2001887,
                "partner_key": "demo-partner-key",
                "shops": {"1000001": {"refresh_token": shopee_seed}},
            },
            "/1000001/api/v2/shop/get_shop_info",
        ),
        DemoPlatform(
            "amazon",
            amazon,
            lambda url: {
                "platform": "amazon",
                "base_url": url,
                "auth_url": url,
                "client_id": "amzn1.application-oa2-client.demo",
                "client_secret": "demo-lwa-secret",
                "shops": {"demo-seller": {"refresh_token": amazon_seed}},
            },
            "/demo-seller/sellers/v1/marketplaceParticipations",
        ),
        DemoPlatform(
            "tiktok",
            tiktok,
            lambda url: {
                "platform": "tiktok",
                "base_url": url,
                "auth_url": url,
                "app_key": "demo-app-key",
                "app_secret": "demo-app-secret",
                "shops": {"demo-shop": {"shop_cipher": "ROW_demo", "refresh_token": tiktok_seed}},
            },
            "/demo-shop/order/202309/orders/search?page_size=10",
            "-X POST -H 'Content-Type: application/json' -d '{\"order_status\": \"UNPAID\"}' ",
        ),
        DemoPlatform(
            "shoptet",
            shoptet,
            lambda url: {
                "platform": "shoptet",
                "base_url": url,
                "auth_url": url,
                "shops": {"demo-eshop": {"oauth_access_token": shoptet_oauth}},
            },
            "/demo-eshop/api/eshop",
        ),
    ]


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    return runner, int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]


async def run_demo(host: str, port: int, ready: Callable[[list[str], dict[str, str]], None]) -> None:
    platforms = demo_platforms()
    runners: list[web.AppRunner] = []
    apps: dict[str, Any] = {}
    sandboxes: dict[str, str] = {}
    try:  # whatever fails (the proxy's port in use), what started is cleaned up
        for platform in platforms:
            runner, sandbox_port = await _start(platform.sandbox.app(), "127.0.0.1", 0)
            runners.append(runner)
            sandboxes[platform.app] = f"http://127.0.0.1:{sandbox_port}"
            apps[platform.app] = platform.config(sandboxes[platform.app])
        settings = Settings(server={"host": host, "port": port, "store_url": "memory://"}, apps=apps)
        proxy, proxy_port = await http_server.start(create_app(settings), settings.server, host, port)
        runners.append(proxy)
        base = f"http://{host}:{proxy_port}"
        ready([f"curl -s {p.curl_options}'{base}/{p.app}{p.curl_path}'" for p in platforms], sandboxes)
        await asyncio.Event().wait()
    finally:
        for each in reversed(runners):
            await each.cleanup()


def demo(host: str = "127.0.0.1", port: int = 8080) -> int:
    setup_logging("auto", "info")

    def show(lines: list[str], sandboxes: dict[str, str]) -> None:
        print("authproxy demo: a sandbox of every platform behind one proxy (memory store).", flush=True)
        print("Paste any of these (sandbox tokens expire every minute: watch the log refresh them):")
        for line in lines:
            print(f"  {line}")
        print("Sandboxes (revoke all their tokens: curl -X POST <sandbox>/_sandbox/expire):")
        print("  " + "  ".join(f"{app}={url}" for app, url in sandboxes.items()))
        print("Request log follows. Ctrl-C to stop.", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(host, port, show))
    return 0
