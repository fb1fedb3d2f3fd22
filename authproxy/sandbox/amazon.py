"""Amazon SP-API sandbox: the LWA token endpoint and a few SP-API routes.

LWA (`POST /auth/o2/token`) checks the form content type, the client id and
secret, and the grant: refresh tokens it issued (they do not rotate: the
answer echoes the one sent), `client_credentials` of an allowed scope (and no
refresh token), single-use authorization codes (5 minutes). Its errors are
`{"error", "error_description"}`.

API routes check the `Host` header (it must name the sandbox's own address, as a
gateway routes on it; 400 otherwise) and `x-amz-access-token`, and answer with the SP-API envelope
`{"errors": [{"code", "message", "details"}]}` and `x-amzn-ErrorType`:
403 "…has expired." / "…is revoked, malformed or invalid." / "Access token is
missing…". A seller token on a grantless route, a grantless token elsewhere,
and any call under `/finances/` (the app lacks that role) get 403 with empty
details — the signal that must not be retried.

Rate limits as SP-API's usage plans: a token bucket per operation and seller
(the seller is the refresh token that got the access token) and, where the
operation has one, per application across sellers; the published defaults
(`platforms/amazon_limits.py`) unless a test sets others (`set_limit`, also
mid-run). Beyond either: 429 `QuotaExceeded`. Replies of a limited operation
carry `x-amzn-RateLimit-Limit` with the seller's rate.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from authproxy.models import Clock, Operation, Scope
from authproxy.platforms.amazon_limits import UsagePlans
from authproxy.sandbox.base import Sandbox
from authproxy.sandbox.limits import TokenBucket

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
QUOTA_EXCEEDED = "You exceeded your quota for the requested resource."
RATE_HEADER = "x-amzn-RateLimit-Limit"
Limit = tuple[float, int]

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
        self.seller_of: dict[str, str] = {}  # access token -> the refresh token (seller) it came from
        self.plans = UsagePlans()
        self.limits: dict[tuple[str, str | None], Limit] = {}  # (operation, seller or None for all)
        self.app_limits: dict[str, Limit] = {}
        self.buckets: dict[tuple[str, str | None], TokenBucket] = {}  # (operation, seller or None: app)
        self.app_throttled = 0  # 429s for the application-wide limit
        self.announce = True  # send x-amzn-RateLimit-Limit ("best effort" at Amazon)
        #: echo inside SP-API's `{"payload": ...}` envelope, as SDKs expect (tests read the bare echo)
        self.payload_envelope = False

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

    def set_limit(self, operation: str, rate: float, burst: int, seller: str | None = None) -> None:
        """A seller's limit for an operation (every seller's when None), from now on."""
        self.limits[(operation, seller)] = (rate, burst)
        for (name, who), bucket in self.buckets.items():
            if name == operation and who is not None and (seller is None or who == seller):
                bucket.change(self.arrivals.clock(), rate, burst)

    def set_app_limit(self, operation: str, rate: float, burst: int) -> None:
        self.app_limits[operation] = (rate, burst)
        if (bucket := self.buckets.get((operation, None))) is not None:
            bucket.change(self.arrivals.clock(), rate, burst)

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
        return self._issue(SELLER, seller=presented, refresh_token=presented)

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
        seller = self.seed_refresh_token()
        return self._issue(SELLER, seller=seller, refresh_token=seller)

    def _issue(self, grant: str, seller: str | None = None, **extra: str) -> web.Response:
        token, lifetime = self.book.issue_access("Atza|IwEB")
        self.grants[token] = grant
        self.seller_of[token] = seller or grant
        body: dict[str, object] = {"access_token": token, "token_type": "bearer", "expires_in": int(lifetime)}
        return web.json_response({**body, **extra})

    # -- SP-API -----------------------------------------------------------------------------

    def _api(self, needs: str, *, role: bool = True) -> Handler:
        """A route for tokens of one grant; role=False: the app lacks the route's role."""

        async def handle(request: web.Request) -> web.StreamResponse:
            if not _own_host(request):
                self.stats.rejected_api_calls += 1
                return _bad_host(request.headers.get("Host", ""))
            token = request.headers.get("x-amz-access-token")
            state = self.book.access_state(token)
            if state != "ok":
                self.stats.rejected_api_calls += 1
                return sp_denied(DETAILS[state])
            if not role or self.grants.get(token or "") != needs:
                self.stats.api_calls += 1
                return sp_denied("")
            operation = self.plans.operation(request.method, request.path)
            seller = self.seller_of.get(token or "", "")
            limit = self._seller_limit(operation, seller) if self.knobs.limits else None
            if self.knobs.limits and not self._take(operation, seller, limit):
                return self._quota_exceeded(limit)
            extra = {"grant": needs, "user_agent": request.headers.get("User-Agent")}
            reply = await self.api_reply(request, extra, inside="payload" if self.payload_envelope else None)
            if not reply.prepared:
                reply.headers["x-amzn-RequestId"] = str(uuid.uuid4())
                if limit is not None and self.announce:
                    reply.headers[RATE_HEADER] = _rate(limit)
            return reply

        return handle

    # -- usage plans -----------------------------------------------------------------------

    def _seller_limit(self, operation: Operation, seller: str) -> Limit | None:
        found = self.limits.get((operation.name, seller)) or self.limits.get((operation.name, None))
        if found is not None:
            return found
        return next(((q.rate, q.burst) for q in operation.quotas if q.scope is Scope.SHOP), None)

    def _app_limit(self, operation: Operation) -> Limit | None:
        if operation.name in self.app_limits:
            return self.app_limits[operation.name]
        return next(((q.rate, q.burst) for q in operation.quotas if q.scope is Scope.APP), None)

    def _take(self, operation: Operation, seller: str, limit: Limit | None) -> bool:
        """Whichever threshold is reached first refuses the call; a refused call takes no token."""
        now = self.arrivals.clock()
        app_limit = self._app_limit(operation)
        mine = self._bucket((operation.name, seller), limit)
        shared = self._bucket((operation.name, None), app_limit)
        seller_ok = mine is None or mine.has(now)
        app_ok = shared is None or shared.has(now)
        passed = seller_ok and app_ok
        if passed:
            for bucket in (mine, shared):
                if bucket is not None:
                    bucket.take(now)
        elif seller_ok:
            self.app_throttled += 1
        if limit is not None or app_limit is not None:
            self.arrivals.calls.setdefault(f"{seller}|{operation.name}", []).append((now, passed))
        return passed

    def _bucket(self, key: tuple[str, str | None], limit: Limit | None) -> TokenBucket | None:
        if limit is None:
            return None
        return self.buckets.setdefault(key, TokenBucket(*limit))

    def _quota_exceeded(self, limit: Limit | None) -> web.Response:
        self.stats.throttled_api_calls += 1
        body = {"errors": [{"code": "QuotaExceeded", "message": QUOTA_EXCEEDED, "details": ""}]}
        headers = {"x-amzn-RequestId": str(uuid.uuid4()), "x-amzn-ErrorType": "QuotaExceeded"}
        if limit is not None and self.announce:
            headers[RATE_HEADER] = _rate(limit)
        return web.json_response(body, status=429, headers=headers)


def _own_host(request: web.Request) -> bool:
    """Whether `Host` names the address the request reached (any name for loopback)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if not sockname:
        return True
    port = str(sockname[1])
    host, _, named_port = request.headers.get("Host", "").rpartition(":")
    return named_port == port and host.strip("[]") in {sockname[0], "localhost", "127.0.0.1", "::1"}


def _bad_host(host: str) -> web.Response:
    error = {"code": "InvalidInput", "message": f"Invalid Host header {host[:80]!r}", "details": ""}
    body = {"errors": [error]}
    return web.json_response(body, status=400, headers={"x-amzn-ErrorType": "InvalidHostException"})


def _rate(limit: Limit) -> str:
    return repr(float(limit[0]))
