"""Amazon SP-API sandbox: the LWA token endpoint and a few SP-API routes.

LWA (`POST /auth/o2/token`) checks the form content type, the client id and
secret, and the grant: refresh tokens it issued (they do not rotate: the
answer echoes the one sent), `client_credentials` of an allowed scope (and no
refresh token), single-use authorization codes (5 minutes). Its errors are
`{"error", "error_description"}`.

API routes check `x-amz-access-token` and answer with the SP-API envelope
`{"errors": [{"code", "message", "details"}]}` and `x-amzn-ErrorType`:
403 "…has expired." / "…is revoked, malformed or invalid." / "Access token is
missing…". A seller token on a grantless route, a grantless token elsewhere,
and any call under `/finances/` (the app lacks that role) get 403 with empty
details — the signal that must not be retried.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from authproxy.models import Clock
from authproxy.sandbox.base import Sandbox

TOKEN_PATH = "/auth/o2/token"
SELLER = "seller"  # the grant of a refresh-token (seller) access token
SCOPES = (
    "sellingpartnerapi::notifications",
    "sellingpartnerapi::migration",
    "sellingpartnerapi::client_credential:rotation",
)
CODE_LIFETIME = 300.0
DENIED = "Access to requested resource is denied."
EXPIRED = "The access token you provided has expired."
INVALID = "The access token you provided is revoked, malformed or invalid."
MISSING = "Access token is missing in the request header."
DETAILS = {"expired": EXPIRED, "invalid": INVALID, "missing": MISSING}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Code:
    redirect_uri: str | None
    expires_at: float


def lwa_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error_description": description, "error": error}, status=status)


def sp_denied(details: str) -> web.Response:
    """SP-API's 403 envelope (details empty when the token is fine but the role is missing)."""
    body = {"errors": [{"code": "Unauthorized", "message": DENIED, "details": details}]}
    headers = {"x-amzn-ErrorType": "AccessDeniedException", "x-amzn-RequestId": str(uuid.uuid4())}
    return web.json_response(body, status=403, headers=headers)


class AmazonSandbox(Sandbox):
    name = "amazon"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        clock: Clock | None = None,
        lifetime: float = 3600,
        scopes: tuple[str, ...] = SCOPES,
    ) -> None:
        super().__init__(clock, lifetime)
        self.client_id, self.client_secret, self.scopes = client_id, client_secret, scopes
        self.grants: dict[str, str] = {}  # access token -> SELLER or its grantless scope
        self.codes: dict[str, Code] = {}
        self.used_codes: set[str] = set()
        self.token_requests: list[dict[str, str]] = []  # every LWA form, as received

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        seller = self._api(SELLER)
        app.router.add_get("/sellers/v1/marketplaceParticipations", seller)
        app.router.add_route("*", "/orders/v0/{tail:.*}", seller)
        app.router.add_post("/feeds/2021-06-30/documents", seller)
        app.router.add_route("*", "/finances/{tail:.*}", self._api(SELLER, role=False))
        app.router.add_route("*", "/notifications/v1/{tail:.*}", self._api(SCOPES[0]))
        app.router.add_get("/authorization/v1/authorizationCode", self._api(SCOPES[1]))
        app.router.add_post("/applications/2023-11-30/clientSecret", self._api(SCOPES[2]))

    # -- what a seller's consent produces ----------------------------------------------------

    def seed_refresh_token(self) -> str:
        """An LWA refresh token as if a seller had authorized the app."""
        return self.book.issue_refresh("Atzr|IwEB")

    def issue_code(self, redirect_uri: str | None = None) -> str:
        """An `spapi_oauth_code`, as Amazon sends to the redirect URI after consent."""
        code = f"AND{secrets.token_hex(10)}"
        self.codes[code] = Code(redirect_uri, self.clock.now() + CODE_LIFETIME)
        return code

    def revoke_all(self) -> None:
        """Forget every access token: the next call is 'revoked, malformed or invalid'."""
        self.book.access.clear()

    # -- LWA --------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        if (failure := await self.token_gate()) is not None:
            return failure
        content_type = request.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
            return lwa_error("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        fields = {key: str(value) for key, value in (await request.post()).items()}
        self.token_requests.append(fields)
        if (fields.get("client_id"), fields.get("client_secret")) != (self.client_id, self.client_secret):
            return lwa_error("invalid_client", "Client authentication failed", 401)
        grant = fields.get("grant_type")
        if grant == "refresh_token":
            return self._refresh(fields.get("refresh_token", ""))
        if grant == "client_credentials":
            return self._grantless(fields)
        if grant == "authorization_code":
            return self._code(fields)
        return lwa_error("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def _refresh(self, presented: str) -> web.Response:
        self.note_refresh(presented)
        outcome = "invalid" if self.knobs.reject_refresh else self.book.use_refresh(presented, rotate=False)
        if outcome != "ok":
            return lwa_error("invalid_grant", "The request has an invalid grant parameter : refresh_token")
        return self._issue(SELLER, refresh_token=presented)

    def _grantless(self, fields: dict[str, str]) -> web.Response:
        if "refresh_token" in fields:
            return lwa_error("invalid_request", "client_credentials takes no refresh_token")
        scope = fields.get("scope", "")
        if scope not in self.scopes:
            return lwa_error("invalid_scope", "The request has an invalid parameter : scope")
        return self._issue(scope, scope=scope)

    def _code(self, fields: dict[str, str]) -> web.Response:
        code = fields.get("code", "")
        issued = self.codes.pop(code, None)
        if issued is None or self.clock.now() >= issued.expires_at:
            reason = "used" if code in self.used_codes else "invalid or expired"
            return lwa_error("invalid_grant", f"The authorization code is {reason}")
        self.used_codes.add(code)
        if issued.redirect_uri is not None and fields.get("redirect_uri") != issued.redirect_uri:
            return lwa_error("invalid_grant", "The redirect_uri does not match the authorization request")
        return self._issue(SELLER, refresh_token=self.seed_refresh_token())

    def _issue(self, grant: str, **extra: str) -> web.Response:
        token, lifetime = self.book.issue_access("Atza|IwEB")
        self.grants[token] = grant
        body: dict[str, object] = {"access_token": token, "token_type": "bearer", "expires_in": int(lifetime)}
        return web.json_response({**body, **extra})

    # -- SP-API -----------------------------------------------------------------------------

    def _api(self, needs: str, *, role: bool = True) -> Handler:
        """A route for tokens of one grant; role=False: the app lacks the route's role."""

        async def handle(request: web.Request) -> web.StreamResponse:
            token = request.headers.get("x-amz-access-token")
            state = self.book.access_state(token)
            if state != "ok":
                self.stats.rejected_api_calls += 1
                return sp_denied(DETAILS[state])
            if not role or self.grants.get(token or "") != needs:
                self.stats.api_calls += 1
                return sp_denied("")
            extra = {"grant": needs, "user_agent": request.headers.get("User-Agent")}
            reply = await self.api_reply(request, extra)
            if not reply.prepared:
                reply.headers["x-amzn-RequestId"] = str(uuid.uuid4())
            return reply

        return handle
