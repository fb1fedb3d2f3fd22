"""Run one sandbox on its own: `python -m authproxy.sandbox sellercenter --port 9001`.

For benchmarks and tests that must keep the upstream out of the measured
process, and for poking at a sandbox with curl.
"""

from __future__ import annotations

import argparse

from aiohttp import web

from authproxy.sandbox.base import Sandbox


def sellercenter() -> Sandbox:
    from authproxy.sandbox.sellercenter import SellerCenterSandbox

    return SellerCenterSandbox({"app-1": "secret-1"})


#: the TikTok sandbox's app credentials when it runs on its own
TIKTOK_APP_KEY, TIKTOK_APP_SECRET = "sandbox-app-key", "sandbox-app-secret"


def tiktok() -> Sandbox:
    """POST /_sandbox/refresh_token seeds a seller's refresh token: with `{"cipher": C}`, of a
    seller whose shop has cipher C (another cipher is refused with that seller's tokens)."""
    from authproxy.sandbox.tiktok import TikTokSandbox

    return TikTokSandbox(TIKTOK_APP_KEY, TIKTOK_APP_SECRET)


#: the refresh token the `oauth2` sandbox accepts first (client "bench-client"/"bench-secret")
OAUTH2_SEED = "bench-seed-refresh-token"


def oauth2() -> Sandbox:
    """Refresh-token grants (not rotated: several proxies may start from the one seed)."""
    from authproxy.sandbox.oauth2 import OAuth2Sandbox

    sandbox = OAuth2Sandbox("bench-client", "bench-secret", rotate=False)
    sandbox.book.refresh[OAUTH2_SEED] = sandbox.clock.now() + sandbox.book.refresh_lifetime
    return sandbox


SANDBOXES = {"sellercenter": sellercenter, "oauth2": oauth2, "tiktok": tiktok}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m authproxy.sandbox")
    parser.add_argument("name", choices=sorted(SANDBOXES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    app = SANDBOXES[args.name]().app()
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()
