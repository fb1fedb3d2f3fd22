"""Shoptet (api.myshoptet.com): add-on OAuth access token -> 30-minute API token.

An installed add-on holds one permanent OAuth access token per e-shop. It is
never sent to the API: `GET {auth_url}/action/ApiOAuthServer/getAccessToken`
with `Authorization: Bearer <OAuth access token>` answers a short-lived API
token (`expires_in: 1800`), sent on calls as `Shoptet-Access-Token`
(platforms.md §2). In a `Token`, `refresh_token` is the OAuth access token and
`access_token` the API token.

Which OAuth access token: the one in the config (`[apps.A.shops.S]
oauth_access_token`) when set, else the one `authproxy authorize` stored. The
config wins because nothing rotates it: an operator who writes one there
after a re-install means it, and keeping it out of the store keeps the secret
in one place. A stored one is carried over from token to token. A refused
OAuth token marks the shop `needs_reauthorization` in the store; after fixing
the config, clear that with `authproxy tokens delete APP SHOP`.

Shoptet allows at most 5 valid API tokens per e-shop and 3 concurrent
connections per token: the token provider's single flight + store lock keep
one shared API token per shop, and `concurrency_limit` caps the calls on it.

Rate limits: a leaky bucket per e-shop, "200 drops, 10 drops/s" in
third-party code (UNVERIFIED officially); every reply says how full it is
(`X-RateLimit-Bucket-Filling: used/max`) and a full one answers 429 with
`Retry-After: <HTTP-date>`. 423 means an identical write is still running:
not a throttle, never retried (platforms.md §8.2).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from authproxy.errors import RefreshError, RefreshRejected
from authproxy.models import (
    HttpReply,
    HttpRequest,
    Operation,
    OutgoingRequest,
    Quota,
    Throttle,
    Token,
    Verdict,
)
from authproxy.platforms.base import Platform, with_header
from authproxy.platforms.oauth_common import FATAL_GRANT_ERRORS, json_object
from authproxy.platforms.throttling import gate_throttle, header, parse_filling
from authproxy.settings import ShoptetApp

OAUTH_PATH = "/action/ApiOAuthServer"
TOKEN_HEADER = "Shoptet-Access-Token"
#: getAccessToken errors that will not go away by asking again (the add-on is gone or refused)
PERMANENT_ERRORS = FATAL_GRANT_ERRORS | {"addon_suspended", "addon_not_installed", "invalid_token"}
EXPIRED_TOKEN = "expired-token"
INVALID_TOKEN = "invalid-token"
INVALID_TOKEN_MESSAGE = "Invalid access token"
#: the leaky bucket (10 drops/s, 200 drops: UNVERIFIED), a tenth kept free for other users of the shop
BUCKET = Operation("*", "*", (Quota(rate=10.0, burst=180),))
FILLING_HEADER = "X-RateLimit-Bucket-Filling"


class Shoptet(Platform):
    name = "shoptet"
    credential_headers = frozenset({"shoptet-access-token", "shoptet-private-api-token"})
    concurrency_limit = 3  # "max 3 [concurrent connections] per token" -> HTTP 429

    def __init__(self, settings: ShoptetApp) -> None:
        super().__init__(settings.base_url, settings.refresh_idle_lifetime)
        self.settings = settings
        self.oauth_url = _eshop_url(settings.auth_url) + OAUTH_PATH

    def is_configured(self, shop: str) -> bool:
        return shop in self.settings.shops

    # -- tokens ----------------------------------------------------------------------

    def _oauth_token(self, shop: str, current: Token | None) -> str | None:
        configured = self.settings.shops.get(shop)
        if configured is not None and configured.oauth_access_token is not None:
            return configured.oauth_access_token.get_secret_value()
        return current.refresh_token if current else None

    def token_request(self, shop: str, current: Token | None, now: float) -> HttpRequest | None:
        oauth_token = self._oauth_token(shop, current)
        if not oauth_token:
            return None
        # GET as in Shoptet's own example; POST is seen in one SDK (UNVERIFIED which is required)
        return HttpRequest(
            method="GET",
            url=self.oauth_url + "/getAccessToken",
            headers={"Authorization": f"Bearer {oauth_token}", "Accept": "application/json"},
        )

    def parse_token(self, shop: str, reply: HttpReply, current: Token | None, now: float) -> Token:
        data = _answer(reply, "getAccessToken")
        expires_in = data.get("expires_in")
        return Token(
            access_token=str(data["access_token"]),
            expires_at=now + float(expires_in) if isinstance(expires_in, int | float) else None,
            obtained_at=now,
            refresh_token=current.refresh_token if current else None,
            extra=dict(current.extra) if current else {},
        )

    # -- add-on installation -----------------------------------------------------------

    def authorize_url(self, redirect: str | None, state: str, now: float) -> str:
        raise NotImplementedError(
            "shoptet has no consent link: a seller installs the add-on from the Shoptet add-on "
            "page, which calls your install URL with ?code=...; exchange it with "
            "`authproxy authorize APP SHOP --code CODE` within a few seconds"
        )

    def code_request(self, shop: str, code: str, redirect: str | None, now: float) -> HttpRequest:
        fields = {
            "client_id": self.settings.client_id or "",
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": redirect or self.settings.redirect_uri or "",
            "scope": "api",
        }
        if self.settings.client_secret is not None:
            fields["client_secret"] = self.settings.client_secret.get_secret_value()
        return HttpRequest(
            method="POST",
            url=self.oauth_url + "/token",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            body=json.dumps(fields).encode(),
        )

    def parse_code_reply(self, shop: str, reply: HttpReply, now: float) -> dict[str, Token]:
        """The permanent OAuth access token, with an already expired (empty) API token,
        so the first call fetches one."""
        data = _answer(reply, "the install code exchange")
        extra = {name: str(data[field]) for field, name in _INSTALL_EXTRA.items() if data.get(field)}
        token = Token(
            access_token="",
            expires_at=now,
            obtained_at=now,
            refresh_token=str(data["access_token"]),
            extra=extra,
        )
        return {shop: token}

    # -- API calls -----------------------------------------------------------------------

    def apply_auth(self, shop: str, request: OutgoingRequest, token: Token, now: float) -> OutgoingRequest:
        return with_header(request, TOKEN_HEADER, token.access_token)

    def should_inspect(self, status: int, headers: Mapping[str, str]) -> bool:
        return status == 401

    def classify(self, reply: HttpReply) -> Verdict:
        """401 expired-token, or invalid-token "Invalid access token.": refresh and replay.

        Everything else (403 invalid-token-no-rights, "Addon installation is not
        approved.", missing-access-token, 429, 423...) belongs to the client."""
        if reply.status != 401:
            return Verdict.OK
        for error in _errors(reply.body):
            code, message = error.get("errorCode"), str(error.get("message") or "")
            if code == EXPIRED_TOKEN or (code == INVALID_TOKEN and INVALID_TOKEN_MESSAGE in message):
                return Verdict.TOKEN_INVALID
        return Verdict.OK

    # -- rate limits -----------------------------------------------------------------------

    def operation(self, method: str, path: str) -> Operation:
        return BUCKET  # one bucket per e-shop, whatever the call

    def published_limits(self) -> tuple[tuple[str, Quota], ...]:
        return (("every call (the e-shop's leaky bucket)", BUCKET.quotas[0]),)

    def throttle(self, reply: HttpReply) -> Throttle:
        """429 with its Retry-After date; the bucket's filling on any reply (423 is no throttle)."""
        filling = parse_filling(header(reply.headers, FILLING_HEADER))
        found = gate_throttle(reply)
        return found if filling is None else dataclasses.replace(found, filling=filling)


_INSTALL_EXTRA = {"eshopId": "eshop_id", "eshopUrl": "eshop_url"}


def _eshop_url(auth_url: str) -> str:
    """The partner e-shop's base URL, also when the admin's full token URL was pasted."""
    url = auth_url.rstrip("/")
    for suffix in (OAUTH_PATH + "/token", OAUTH_PATH + "/getAccessToken"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def _answer(reply: HttpReply, what: str) -> dict[str, Any]:
    """A token answer's JSON, or the error it means: refused for good, or try later."""
    data = json_object(reply.body)
    error = str(data["error"])[:100] if data and data.get("error") else None
    if reply.status >= 500:
        raise RefreshError(f"{what} answered HTTP {reply.status}")
    if error in PERMANENT_ERRORS or reply.status in (401, 403):
        raise RefreshRejected(f"{what} refused: {error or 'HTTP ' + str(reply.status)}")
    if data is None:
        raise RefreshError(f"{what} answered HTTP {reply.status} without JSON")
    if reply.status >= 400 or error or not data.get("access_token"):
        raise RefreshError(f"{what} error: {error or 'no access_token'} (HTTP {reply.status})")
    return data


def _errors(body: bytes) -> list[dict[str, Any]]:
    data = json_object(body)
    errors = data.get("errors") if data else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
