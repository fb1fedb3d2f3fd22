"""Amazon Selling Partner API (SP-API), authorized by Login with Amazon (LWA).

Tokens come from LWA, `POST {auth_url}/auth/o2/token` (a form, charset UTF-8):

* A seller's calls use `grant_type=refresh_token` with the shop's LWA refresh
  token. Amazon refresh tokens do not rotate (the answer echoes the one sent),
  so a token written in the config (`[apps.X.shops.Y] refresh_token`) wins over
  a stored one: the config is where an operator puts a re-authorized seller's
  new token, and nothing can make a stored copy newer than it. A configured
  token is not copied into the store. Shops without one use the refresh token
  that `authorize --code` or `tokens set` stored.
* Grantless operations (Notifications destinations/subscriptions, the
  Authorization API's migration, client-secret rotation) need no seller: a
  `grant_type=client_credentials` token of one scope. They are addressed by
  the shop segment `grantless:notifications`, `grantless:migration` or
  `grantless:rotation`, e.g. `/<app>/grantless:notifications/notifications/v1/destinations`;
  each is its own token-store entry and needs no shop config.

Calls carry `x-amz-access-token` plus `x-amz-date` and a `user-agent` (the
client's own is kept); there is no SigV4 (Amazon stopped requiring it on
2023-10-02). A 403 whose error details say the access token "you provided"
expired or is revoked, malformed or invalid means: refresh and replay once.
A 403 with empty details (the app lacks a role), 429 and the rest pass through.

Rate limits: a token bucket per operation and seller, some also per
application (`amazon_limits.py`). A 429 (`QuotaExceeded`) names no wait;
`x-amzn-RateLimit-Limit` on a reply announces the seller's rate.

Public apps: "the selling partner must re-authorize your public application
every 365 days" (platforms.md §8.1). When that year starts is not stated; the
code exchange is the one moment the proxy sees, so its horizon is recorded then
(`reauthorize_every`, default 365 days) and carried by every refresh. A private
(self-authorised) app, or the reading that LWA refresh tokens simply do not
end, sets `reauthorize_every = 0`: no horizon. Refresh tokens put in the config
or with `tokens set` have none unless `tokens set --authorized-until` says so.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from authproxy.errors import ConfigError, RefreshError
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
from authproxy.platforms.amazon_limits import UsagePlans
from authproxy.platforms.base import Platform, with_header
from authproxy.platforms.oauth_common import form, json_object, oauth_token
from authproxy.platforms.throttling import gate_throttle, header, parse_rate
from authproxy.settings import AmazonApp

TOKEN_PATH = "/auth/o2/token"
LWA_URL = "https://api.amazon.com"
#: LWA's documented content type (the charset parameter included)
FORM_UTF8 = "application/x-www-form-urlencoded;charset=UTF-8"
ENDPOINTS = {
    "na": "https://sellingpartnerapi-na.amazon.com",
    "eu": "https://sellingpartnerapi-eu.amazon.com",
    "fe": "https://sellingpartnerapi-fe.amazon.com",
}
SANDBOX_ENDPOINTS = {region: url.replace("://", "://sandbox.") for region, url in ENDPOINTS.items()}
#: where sellers of a region consent; FE is per marketplace (JP here; AU/SG via seller_central_url)
SELLER_CENTRAL = {
    "na": "https://sellercentral.amazon.com",
    "eu": "https://sellercentral-europe.amazon.com",
    "fe": "https://sellercentral.amazon.co.jp",
}
CONSENT_PATH = "/apps/authorize/consent"
#: shop segment -> LWA scope of a grantless token (the rotation scope's name is UNVERIFIED)
GRANTLESS = {
    "grantless:notifications": "sellingpartnerapi::notifications",
    "grantless:migration": "sellingpartnerapi::migration",
    "grantless:rotation": "sellingpartnerapi::client_credential:rotation",
}
TOKEN_HEADER = "x-amz-access-token"
#: a Restricted Data Token (Tokens API) a client got through the proxy for a PII call
RDT_PREFIX = "Atz.sprdt|"
#: words that, after "access token you provided", mean the token (not the app) is bad
TOKEN_PROBLEMS = ("expired", "revoked", "malformed", "invalid")
RATE_HEADER = "x-amzn-RateLimit-Limit"
#: what authproxy's own LWA endpoint hands an SDK (proxy/lwa.py): no token at all; the
#: proxy sends the shop's real one in place of whatever `x-amz-access-token` arrives
PLACEHOLDER_TOKEN = "authproxy-placeholder|not-a-token|authproxy-sends-the-shop-token"
#: grants an SDK fetches an access token with: both answered with the placeholder
PLACEHOLDER_GRANTS = frozenset({"refresh_token", "client_credentials"})


def amz_date(now: float) -> str:
    """`x-amz-date`: UTC, basic ISO 8601 (20190430T123600Z)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def token_rejected(details: str) -> bool:
    """Whether an error's details blame the access token that was sent."""
    text = details.lower()
    return "access token you provided" in text and any(word in text for word in TOKEN_PROBLEMS)


class Amazon(Platform):
    name = "amazon"
    # x-amz-access-token is not stripped up front: apply_auth keeps a client's RDT, replaces the rest
    credential_headers = frozenset({"authorization"})

    def __init__(self, settings: AmazonApp) -> None:
        endpoints = SANDBOX_ENDPOINTS if settings.sandbox else ENDPOINTS
        super().__init__(settings.base_url or endpoints[settings.region], settings.refresh_idle_lifetime)
        self.settings = settings
        self.token_url = (settings.auth_url or LWA_URL).rstrip("/") + TOKEN_PATH
        self.usage_plans = UsagePlans()

    def is_configured(self, shop: str) -> bool:
        return shop in GRANTLESS or shop in self.settings.shops

    # -- tokens -------------------------------------------------------------------------

    def _configured_refresh(self, shop: str) -> str | None:
        own = self.settings.shops.get(shop)
        return own.refresh_token.get_secret_value() if own and own.refresh_token else None

    def _lwa(self, fields: dict[str, str]) -> HttpRequest:
        fields["client_id"] = self.settings.client_id
        fields["client_secret"] = self.settings.client_secret.get_secret_value()
        headers = {"Content-Type": FORM_UTF8, "Accept": "application/json"}
        return HttpRequest("POST", self.token_url, headers, form(fields))

    def token_request(self, shop: str, current: Token | None, now: float) -> HttpRequest | None:
        scope = GRANTLESS.get(shop)
        if scope is not None:
            return self._lwa({"grant_type": "client_credentials", "scope": scope})
        refresh = self._configured_refresh(shop) or (current.refresh_token if current else None)
        if not refresh:
            return None
        return self._lwa({"grant_type": "refresh_token", "refresh_token": refresh})

    def parse_token(self, shop: str, reply: HttpReply, current: Token | None, now: float) -> Token:
        if shop in GRANTLESS:
            return oauth_token(reply, None, now)
        token = oauth_token(reply, current, now)
        if self._configured_refresh(shop):
            # the config holds this secret: the store needs no copy of it
            return dataclasses.replace(token, refresh_token=None)
        return token

    # -- seller authorization ------------------------------------------------------------

    def authorize_url(self, redirect: str | None, state: str, now: float) -> str:
        """The Seller Central consent page (website authorization workflow)."""
        if not self.settings.application_id:
            raise ConfigError("an amazon app needs application_id (amzn1.sp.solution...) for consent links")
        host = self.settings.seller_central_url or SELLER_CENTRAL[self.settings.region]
        params = {"application_id": self.settings.application_id, "state": state}
        if redirect:
            params["redirect_uri"] = redirect
        if self.settings.draft:
            params["version"] = "beta"
        return f"{host.rstrip('/')}{CONSENT_PATH}?{urlencode(params)}"

    def code_request(self, shop: str, code: str, redirect: str | None, now: float) -> HttpRequest:
        """Exchange the `spapi_oauth_code` Amazon sent to the redirect URI."""
        fields = {"grant_type": "authorization_code", "code": code}
        if redirect:
            fields["redirect_uri"] = redirect
        return self._lwa(fields)

    def parse_code_reply(self, shop: str, reply: HttpReply, now: float) -> dict[str, Token]:
        token = oauth_token(reply, None, now)
        if not token.refresh_token:
            raise RefreshError("LWA answered the code exchange without a refresh token")
        if self.settings.reauthorize_every:
            token = dataclasses.replace(token, authorized_until=now + self.settings.reauthorize_every)
        return {shop: token}

    def callback_params(self, query: Mapping[str, str]) -> tuple[str | None, str | None]:
        """Amazon redirects with `spapi_oauth_code` and the seller's `selling_partner_id`."""
        return query.get("selling_partner_id") or None, query.get("spapi_oauth_code") or None

    # -- API calls -------------------------------------------------------------------------

    def apply_auth(self, shop: str, request: OutgoingRequest, token: Token, now: float) -> OutgoingRequest:
        sent = request.header(TOKEN_HEADER) or ""
        access = sent if sent.startswith(RDT_PREFIX) else token.access_token
        signed = with_header(request, TOKEN_HEADER, access)
        signed = with_header(signed, "x-amz-date", amz_date(now))
        if signed.header("user-agent") is None:
            signed = with_header(signed, "user-agent", self.settings.user_agent)
        return signed

    def should_inspect(self, status: int, headers: Any) -> bool:
        return status == 403

    def classify(self, reply: HttpReply) -> Verdict:
        if reply.status != 403:
            return Verdict.OK
        data = json_object(reply.body)
        errors = data.get("errors") if data else None
        if not isinstance(errors, list):
            return Verdict.OK
        for error in errors:
            if isinstance(error, dict) and token_rejected(str(error.get("details") or "")):
                return Verdict.TOKEN_INVALID
        return Verdict.OK

    def error_members(self, problem: Mapping[str, Any]) -> dict[str, Any]:
        """SP-API's error envelope (platforms.md §5.1): SDKs raise on an `errors` member."""
        error = {"code": problem["code"], "message": problem["detail"], "details": problem.get("action", "")}
        return {"errors": [error]}

    def lwa_placeholder(self) -> dict[str, Any]:
        """LWA's token answer (platforms.md §5.1) carrying the placeholder, for an hour."""
        return {"access_token": PLACEHOLDER_TOKEN, "token_type": "bearer", "expires_in": 3600}

    def lwa_error_members(self, problem: Mapping[str, Any]) -> dict[str, Any]:
        """LWA's error shape `{error, error_description}` beside SP-API's envelope."""
        error = "unsupported_grant_type" if problem["code"] == "unsupported_grant" else "invalid_request"
        return {"error": error, "error_description": problem["detail"], **self.error_members(problem)}

    # -- rate limits -------------------------------------------------------------------------

    def operation(self, method: str, path: str) -> Operation:
        return self.usage_plans.operation(method, path)

    def published_limits(self) -> tuple[tuple[str, Quota], ...]:
        return self.usage_plans.described()

    def throttle(self, reply: HttpReply) -> Throttle:
        """429 QuotaExceeded (no wait named), and the seller's rate when announced."""
        found = gate_throttle(reply)
        rate = parse_rate(header(reply.headers, RATE_HEADER))
        return found if rate is None else dataclasses.replace(found, rate=rate)
