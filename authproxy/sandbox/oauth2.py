"""A plain OAuth2 provider: client_credentials and rotating refresh_token grants."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from aiohttp import web

from authproxy.models import Clock
from authproxy.sandbox.base import Sandbox

TOKEN_PATH = "/oauth/token"


class OAuth2Sandbox(Sandbox):
    name = "oauth2"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        clock: Clock | None = None,
        lifetime: float = 3600,
        rotate: bool = True,
    ) -> None:
        super().__init__(clock, lifetime)
        self.client_id, self.client_secret, self.rotate = client_id, client_secret, rotate

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_route("*", "/api/{tail:.*}", self.api)

    def seed_refresh_token(self) -> str:
        """A refresh token as if a user had just consented."""
        return self.book.issue_refresh()

    async def token(self, request: web.Request) -> web.Response:
        if (failure := await self.token_gate()) is not None:
            return failure
        form = await request.post()
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = form.get("grant_type")
        body: dict[str, object] = {"token_type": "Bearer"}
        if grant == "refresh_token":
            presented = str(form.get("refresh_token", ""))
            self.note_refresh(presented)
            outcome = (
                "invalid"
                if self.knobs.reject_refresh
                else self.book.use_refresh(presented, rotate=self.rotate)
            )
            if outcome != "ok":
                return web.json_response(
                    {"error": "invalid_grant", "error_description": f"refresh token {outcome}"}, status=400
                )
            if self.rotate:
                body["refresh_token"] = self.book.issue_refresh()
        elif grant != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token, lifetime = self.book.issue_access("oa")
        body.update(access_token=token, expires_in=int(lifetime))
        return web.json_response(body)

    def _client_ok(self, request: web.Request, form: object) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Basic":
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return (unquote(user), unquote(password)) == (self.client_id, self.client_secret)
        get = getattr(form, "get", lambda key: None)
        return (get("client_id"), get("client_secret")) == (self.client_id, self.client_secret)

    async def api(self, request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        state = self.book.access_state(token if scheme == "Bearer" else None)
        if state != "ok":
            self.stats.rejected_api_calls += 1
            return web.json_response({"error": "invalid_token", "error_description": state}, status=401)
        return await self.api_reply(request)
