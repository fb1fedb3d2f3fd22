"""Login with Amazon, answered by authproxy: `POST /<amazon app>/<shop>/auth/o2/token`.

Amazon's SDKs fetch an LWA access token themselves before their first call
(amzn-sp-api's `SPAPIClient` in its constructor). Through authproxy they need
none: the proxy sends the shop's token in place of whatever
`x-amz-access-token` a client sends. So this route answers the SDK's token call
with a placeholder that is plainly not a token, and never forwards it: the
form carries the client's LWA secret and refresh token, which are read only
for `grant_type` and never logged, stored or sent anywhere.

Only for apps whose platform is Amazon; on any other app the path is proxied
as usual. An `authorization_code` grant (or none) is refused with 400
`unsupported_grant`: exchanging a seller's code is `authproxy authorize`'s
business, which keeps the refresh token. No client key is asked for: the
answer grants nothing, and the SDKs cannot add a header to this call.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from authproxy.errors import ProxyError, RequestTimeout, UnsupportedGrant
from authproxy.platforms.amazon import PLACEHOLDER_GRANTS, TOKEN_PATH, Amazon
from authproxy.proxy.handler import access_log, proxy, request_id_for
from authproxy.proxy.routing import parse_route
from authproxy.runtime import RUNTIME

#: the route app.py registers (aiohttp matches it before the catch-all proxy route)
ROUTE = "/{app}/{shop}" + TOKEN_PATH


async def lwa_token(request: web.Request) -> web.StreamResponse:
    """The placeholder for an Amazon app's shop; anything else goes to the proxy."""
    runtime = request.app[RUNTIME]
    try:
        route = parse_route(request.raw_path)
    except ProxyError:
        return await proxy(request, runtime)  # it answers the bad path
    app = runtime.apps.get(route.app)
    if app is None or not isinstance(app.platform, Amazon) or route.path != TOKEN_PATH:
        return await proxy(request, runtime)
    platform = app.platform
    request_id = request_id_for(request)
    headers = {"X-Request-Id": request_id, "Cache-Control": "no-store"}
    try:
        async with asyncio.timeout(runtime.server.body_timeout):
            form = await request.post()  # the secrets in it go no further than this frame
        if form.get("grant_type") not in PLACEHOLDER_GRANTS:  # its value is not echoed: it is the client's
            raise UnsupportedGrant("only the refresh_token and client_credentials grants are answered here")
        response = web.json_response(platform.lwa_placeholder(), headers=headers)
    except (ProxyError, TimeoutError) as exc:
        error = exc if isinstance(exc, ProxyError) else RequestTimeout("the form did not arrive in time")
        body = error.body_bytes(
            app=route.app, shop=route.shop, request_id=request_id, dialect=platform.lwa_error_members
        )
        response = web.Response(status=error.status, body=body, headers={**error.headers(), **headers})
    runtime.metrics.request(route.app, response.status)
    fields: dict[str, object] = {"request_id": request_id, "app": route.app, "shop": route.shop}
    fields.update(method=request.method, path=TOKEN_PATH, status=response.status, answered="here")
    access_log.write(fields)
    return response
