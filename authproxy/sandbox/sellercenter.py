"""GFG Seller Center sandbox: client-credentials with Basic auth, Bearer on calls."""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from authproxy.models import Clock
from authproxy.sandbox.base import Sandbox

TOKEN_PATH = "/oauth/client-credentials"


class SellerCenterSandbox(Sandbox):
    name = "sellercenter"

    def __init__(self, accounts: dict[str, str], clock: Clock | None = None, lifetime: float = 3600) -> None:
        super().__init__(clock, lifetime)
        self.accounts = accounts  # application id -> secret

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_route("*", "/v2/{tail:.*}", self.api)

    async def token(self, request: web.Request) -> web.Response:
        if (failure := await self.token_gate()) is not None:
            return failure
        if _basic_user(request.headers.get("Authorization", ""), self.accounts) is None:
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        if request.content_type != "application/x-www-form-urlencoded" or form.get("grant_type") != (
            "client_credentials"
        ):
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token, lifetime = self.book.issue_access("gfg")
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": int(lifetime)})

    async def api(self, request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        state = self.book.access_state(token if scheme == "Bearer" else None)
        if state != "ok":
            self.stats.rejected_api_calls += 1
            return web.json_response({"error": f"access token {state}"}, status=401)
        return await self.api_reply(request)


def _basic_user(header: str, accounts: dict[str, str]) -> str | None:
    scheme, _, encoded = header.partition(" ")
    if scheme != "Basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user if accounts.get(user) == password else None
