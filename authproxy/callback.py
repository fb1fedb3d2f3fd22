"""`GET /_authproxy/oauth/<app>/callback`: where a platform sends the seller after consent.

Registered only when `server.public_url` is set. The seller's browser has no
client key: the signed `state` (see authorize.py) is what authenticates the
call, so nothing is done before it checks out. The code is exchanged and
stored like `authproxy authorize` does; the page names the shops, never a
token. The query (code, state) is never logged.
"""

from __future__ import annotations

import html
import logging
import re
import uuid

from aiohttp import web

from authproxy.authorize import callback_url, verify_state
from authproxy.errors import (
    AuthorizationFailed,
    ProxyError,
    RefreshError,
    RefreshFailed,
    RefreshRejected,
)
from authproxy.proxy.routing import SHOP_NAME
from authproxy.runtime import RUNTIME, Runtime

log = logging.getLogger("authproxy.callback")
#: a platform's `error` value, echoed in the problem's detail only when it looks like a code
ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Authorized</title></head>
<body><h1>Authorized</h1><p>{app}: {shops} can now be used through authproxy.
You can close this page.</p></body></html>
"""


async def oauth_callback(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    app = request.match_info["app"]
    request_id = uuid.uuid4().hex
    try:
        shops = await _authorize(request, runtime, app)
    except ProxyError as exc:
        log.warning("oauth callback for %s refused: %s: %s", app, exc.code, exc.detail)
        headers = {**exc.headers(), **NO_STORE, "X-Request-Id": request_id}
        body = exc.body_bytes(app=app, shop=None, request_id=request_id)
        return web.Response(status=exc.status, body=body, headers=headers)
    headers = {**NO_STORE, "X-Request-Id": request_id}
    if "text/html" in request.headers.get("Accept", ""):
        names = ", ".join(html.escape(shop) for shop in shops)
        page = PAGE.format(app=html.escape(app), shops=names)
        headers["Content-Security-Policy"] = "default-src 'none'"
        return web.Response(text=page, content_type="text/html", headers=headers)
    return web.json_response({"status": "authorized", "app": app, "shops": shops}, headers=headers)


async def _authorize(request: web.Request, runtime: Runtime, name: str) -> list[str]:
    """Check the state, read the redirect, exchange the code: the shops stored."""
    app = runtime.app(name)
    secret = runtime.server.state_secret.get_secret_value()  # checked at start-up: set
    claims = verify_state(secret, request.query.get("state"), name, runtime.clock.now())
    named, code = app.platform.callback_params(request.query)
    if code is None:
        error = request.query.get("error", "")
        reason = f" (error={error})" if ERROR_CODE.fullmatch(error) else ""
        raise AuthorizationFailed(f"the redirect carries no authorization code{reason}")
    shop = claims.shop or named
    if not shop:
        raise AuthorizationFailed(
            "the redirect does not name the shop: "
            f"create the link with `authproxy authorize-url {name} --shop SHOP`"
        )
    if not SHOP_NAME.fullmatch(shop):
        raise AuthorizationFailed(f"the shop name must match {SHOP_NAME.pattern}")
    try:
        tokens = await app.tokens.authorize(shop, code, callback_url(runtime.server, name))
    except RefreshRejected as exc:
        raise AuthorizationFailed(f"the platform refused the code: {exc}") from None
    except RefreshError as exc:
        raise RefreshFailed(f"the code exchange failed: {exc}") from None
    except NotImplementedError as exc:
        raise AuthorizationFailed(str(exc)) from None
    return sorted(tokens)
