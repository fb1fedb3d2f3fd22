"""Errors, and how the proxy answers them.

    Exception
    ├── ConfigError                 bad configuration, found at start-up (CLI exits 2)
    ├── RefreshRejected             token endpoint refused the grant (invalid_grant...)
    ├── RefreshError                token endpoint failed (timeout, 5xx, garbage)
    └── ProxyError                  answered to the client as problem+json
        ├── UnknownApp              404 unknown_app
        ├── UnknownShop             404 unknown_shop
        ├── BadPath                 400 bad_path
        ├── BodyTooLarge            413 body_too_large
        ├── NeedsReauthorization    401 needs_reauthorization
        ├── RefreshFailed           502 refresh_failed
        ├── RefreshBusy             503 refresh_busy (+Retry-After)
        ├── StoreUnavailable        503 store_unavailable
        ├── UpstreamUnreachable     502 upstream_unreachable
        ├── UpstreamTimeout         504 upstream_timeout
        ├── UpstreamBusy            503 upstream_busy (+Retry-After): per-token call cap full
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
from typing import ClassVar

PROBLEM_TYPE = "urn:authproxy:error:"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and file."""


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

    def body_bytes(self, *, app: str | None, shop: str | None, request_id: str) -> bytes:
        return json.dumps(self.problem(app=app, shop=shop, request_id=request_id)).encode()


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
