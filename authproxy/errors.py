"""Errors, and how the proxy answers them.

    Exception
    ├── ConfigError                 bad configuration, found at start-up (CLI exits 2)
    ├── CannotListen                the server's address cannot be bound (CLI exits 1)
    ├── RefreshRejected             token endpoint refused the grant (invalid_grant...)
    ├── RefreshError                token endpoint failed (timeout, 5xx, garbage)
    └── ProxyError                  answered to the client as problem+json
        ├── UnknownApp              404 unknown_app
        ├── UnknownShop             404 unknown_shop
        ├── BadPath                 400 bad_path
        ├── BodyTooLarge            413 body_too_large
        ├── BadRequest              400 bad_request: not valid HTTP (request line, headers, chunking)
        ├── RequestTimeout          408 request_timeout: the client was too slow to send its request
        ├── ClientGone              499 client_gone: the client hung up (logged, never sent)
        ├── NeedsReauthorization    401 needs_reauthorization
        ├── RefreshFailed           502 refresh_failed
        ├── RefreshBusy             503 refresh_busy (+Retry-After)
        ├── StoreUnavailable        503 store_unavailable (+Retry-After)
        ├── SecretUndecryptable     500 secret_undecryptable: a stored secret does not open
        ├── UpstreamUnreachable     502 upstream_unreachable
        ├── UpstreamTimeout         504 upstream_timeout
        ├── UpstreamBusy            503 upstream_busy (+Retry-After): per-token call cap full
        ├── RateLimited             429 rate_limited (+Retry-After, X-AuthProxy-RateLimit-Scope)
        ├── BadHeader               400 bad_header: a header for authproxy is malformed
        ├── UnsupportedGrant        400 unsupported_grant: an LWA grant authproxy does not answer
        ├── UnauthorizedClient      401 unauthorized_client
        ├── BadState                400 bad_state (OAuth callback)
        └── AuthorizationFailed     400 authorization_failed (OAuth callback)
    (a bug anywhere else is answered as ProxyError itself: 500 internal_error)

`RefreshRejected`/`RefreshError` are what the pure platform modules raise
when parsing a token answer; the token provider turns them into
`NeedsReauthorization`/`RefreshFailed`. Messages never carry secrets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

PROBLEM_TYPE = "urn:authproxy:error:"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and file."""


class CannotListen(Exception):
    """The server cannot listen on its address (in use, or not permitted); the message says what to do."""


class RefreshRejected(Exception):
    """The platform refused to renew the token: the shop must authorize again."""


class RefreshError(Exception):
    """The token endpoint could not be used this time (may work later)."""


class ProxyError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"
    action: ClassVar[str] = ""

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after

    def problem(self, *, app: str | None, shop: str | None, request_id: str) -> dict[str, object]:
        body: dict[str, object] = {
            "type": PROBLEM_TYPE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "app": app,
            "shop": shop,
            "request_id": request_id,
        }
        if self.action:
            body["action"] = self.action
        return body

    def headers(self) -> dict[str, str]:
        headers = {"X-AuthProxy-Error": self.code, "Content-Type": "application/problem+json"}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def body_bytes(
        self, *, app: str | None, shop: str | None, request_id: str, dialect: Dialect | None = None
    ) -> bytes:
        """The problem+json body; `dialect` adds members in a platform's own error shape."""
        problem = self.problem(app=app, shop=shop, request_id=request_id)
        return problem_bytes(problem, dialect(problem) if dialect is not None else {})


#: members a platform adds to a problem (Platform.error_members), given the problem
Dialect = Callable[[Mapping[str, Any]], Mapping[str, Any]]


def problem_bytes(problem: Mapping[str, Any], extra: Mapping[str, Any]) -> bytes:
    """The problem as JSON with `extra`'s members after its own; a member of the problem
    is never replaced (RFC 9457 §3.2 lets a problem carry extension members)."""
    body = dict(problem)
    for name, value in extra.items():
        body.setdefault(name, value)
    return json.dumps(body).encode()


class UnknownApp(ProxyError):
    status, code, title = 404, "unknown_app", "Unknown app"
    action = "Use /<app>/<shop>/<path> with an app named in the [apps] section of the config."


class UnknownShop(ProxyError):
    status, code, title = 404, "unknown_shop", "Unknown shop"
    action = (
        "Authorize the shop (authproxy authorize APP SHOP --code CODE), store a token "
        "(authproxy tokens set APP SHOP ...) or add [apps.APP.shops.SHOP] to the config."
    )


class BadPath(ProxyError):
    status, code, title = 400, "bad_path", "Bad path"
    action = "Send /<app>/<shop>/<upstream path> without '..' segments, backslashes or NUL bytes."


class BodyTooLarge(ProxyError):
    status, code, title = 413, "body_too_large", "Request body too large"
    action = "Send a smaller body, or raise server.max_body / server.max_replay_body."


class BadRequest(ProxyError):
    status, code, title = 400, "bad_request", "Malformed request"
    action = "Send valid HTTP/1.1: request line, headers and (chunked) body as RFC 9112 describes."


class RequestTimeout(ProxyError):
    status, code, title = 408, "request_timeout", "Request not received in time"
    action = (
        "Send the request's head within server.header_timeout seconds of its first byte and "
        "its body within server.body_timeout seconds; the connection is closed."
    )


class ClientGone(ProxyError):
    """The client closed its connection before the proxy could answer: nobody reads this."""

    status, code, title = 499, "client_gone", "Client closed the connection"


class NeedsReauthorization(ProxyError):
    status, code, title = 401, "needs_reauthorization", "Shop needs re-authorization"
    action = (
        "The platform refused the stored refresh credential. Have the seller authorize "
        "again, then store the new token (authproxy authorize / authproxy tokens set)."
    )


class RefreshFailed(ProxyError):
    status, code, title = 502, "refresh_failed", "Token refresh failed"
    action = "The platform's token endpoint failed; authproxy backs off and retries. Try later."


class RefreshBusy(ProxyError):
    status, code, title = 503, "refresh_busy", "Token refresh in progress"
    action = "Another worker is refreshing this shop's token; retry after Retry-After seconds."


class StoreUnavailable(ProxyError):
    status, code, title = 503, "store_unavailable", "Token store unavailable"
    action = "authproxy cannot reach its token store (Redis). Check server.store_url and Redis."

    def __init__(self, detail: str, *, retry_after: int | None = 1) -> None:
        # a failover or a brief outage: worth asking again in a second
        super().__init__(detail, retry_after=retry_after)


class WriteUnconfirmed(StoreUnavailable):
    """A new token pair the master took but fewer replicas than server.store_wait_replicas
    confirmed (WAIT): a failover now could lose it, so the process keeps it (keeper.py)."""


class SecretUndecryptable(ProxyError):
    """A sealed secret that does not open: a key missing from the keyring, or a ciphertext
    copied from another record or altered. `reason` (unknown_key, mismatch, malformed)
    labels the decrypt-failure metric."""

    status, code, title = 500, "secret_undecryptable", "Stored secret cannot be decrypted"
    action = (
        "The shop's stored token does not decrypt with this proxy's keyring. A missing key: add it "
        "to server.keys on every replica. Otherwise the record was copied or altered: authorize "
        "the shop again, or store its token (authproxy tokens set)."
    )

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class UpstreamUnreachable(ProxyError):
    status, code, title = 502, "upstream_unreachable", "Upstream unreachable"
    action = "The platform's API could not be reached. Check the app's base_url and network."


class UpstreamTimeout(ProxyError):
    status, code, title = 504, "upstream_timeout", "Upstream timeout"
    action = "The platform did not answer in time (server.read_timeout). Retry later."


class UpstreamBusy(ProxyError):
    status, code, title = 503, "upstream_busy", "Too many concurrent calls for this token"
    action = (
        "The platform allows only a few concurrent calls per token (Shoptet: 3) and they stayed "
        "busy for server.slot_wait seconds; retry after Retry-After seconds or send fewer at once."
    )


class RateLimited(ProxyError):
    status, code, title = 429, "rate_limited", "Rate limit: no turn within the allowed wait"
    action = (
        "The platform's quota for this shop (or app) and operation has no room within "
        "server.max_queue_wait (or X-AuthProxy-Max-Wait); nothing was sent. Retry after Retry-After seconds."
    )

    def __init__(self, detail: str, *, retry_after: int, scope: str) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.scope = scope

    def headers(self) -> dict[str, str]:
        headers = super().headers()
        headers["X-AuthProxy-RateLimit-Scope"] = self.scope
        return headers


class BadHeader(ProxyError):
    status, code, title = 400, "bad_header", "Bad header"
    action = "Fix the X-AuthProxy-* header the detail names (X-AuthProxy-Max-Wait: seconds, >= 0)."


class UnsupportedGrant(ProxyError):
    status, code, title = 400, "unsupported_grant", "Grant not answered by authproxy"
    action = (
        "authproxy's LWA endpoint answers only the refresh_token and client_credentials grants an "
        "SDK fetches access tokens with. Exchange a seller's code with `authproxy authorize APP SHOP "
        "--code CODE`, which stores the refresh token."
    )


class UnauthorizedClient(ProxyError):
    status, code, title = 401, "unauthorized_client", "Unauthorized client"
    action = "Send a valid X-AuthProxy-Key allowed for this app and shop ([clients] in config)."


class BadState(ProxyError):
    status, code, title = 400, "bad_state", "Bad OAuth state"
    action = (
        "The callback's state is missing, forged, for another app or expired. Create a new "
        "link with `authproxy authorize-url APP` and have the seller open it within its validity."
    )


class AuthorizationFailed(ProxyError):
    status, code, title = 400, "authorization_failed", "Authorization failed"
    action = (
        "The seller did not grant access, the redirect names no shop, or the platform refused "
        "the code (used or expired). Create a new link with `authproxy authorize-url APP`."
    )
