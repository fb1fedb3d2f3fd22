"""Any OAuth2 API: client_credentials or refresh_token grant.

Rotating single-use refresh tokens are supported: the answer's refresh token
replaces the stored one. Client authentication is HTTP Basic or in the body;
the header name/format and the invalid-token rule (statuses, plus an optional
JSON field/value match) are configurable. A refresh token that dies when
unused (`refresh_idle_lifetime`, default 0: it does not) is given that expiry
from each answer's time.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from authproxy.models import HttpReply, HttpRequest, OutgoingRequest, Token, Verdict
from authproxy.platforms.base import Platform, with_header
from authproxy.platforms.oauth_common import FORM, basic_auth, form, json_object, oauth_token
from authproxy.settings import OAuth2App


class OAuth2(Platform):
    name = "oauth2"

    def __init__(self, settings: OAuth2App) -> None:
        super().__init__(settings.base_url, settings.refresh_idle_lifetime)
        self.settings = settings
        self.credential_headers = frozenset({"authorization", settings.header.lower()})
        self.single_use_refresh = settings.grant_type == "refresh_token"  # rotation is allowed (RFC 9700)

    def is_configured(self, shop: str) -> bool:
        return shop in self.settings.shops

    def _grant(self, shop: str, current: Token | None) -> dict[str, str] | None:
        if self.settings.grant_type == "client_credentials":
            return {"grant_type": "client_credentials"}
        # A stored refresh token wins: a rotated one supersedes the configured seed.
        refresh = current.refresh_token if current else None
        if refresh is None and (seed := self.settings.shops.get(shop)) and seed.refresh_token:
            refresh = seed.refresh_token.get_secret_value()
        return {"grant_type": "refresh_token", "refresh_token": refresh} if refresh else None

    def token_request(self, shop: str, current: Token | None, now: float) -> HttpRequest | None:
        fields = self._grant(shop, current)
        if fields is None:
            return None
        if self.settings.scope:
            fields["scope"] = self.settings.scope
        headers = {"Content-Type": FORM, "Accept": "application/json"}
        secret = self.settings.client_secret.get_secret_value() if self.settings.client_secret else ""
        if self.settings.client_auth == "basic":
            headers["Authorization"] = basic_auth(self.settings.client_id, secret)
        else:
            fields["client_id"] = self.settings.client_id
            if secret:
                fields["client_secret"] = secret
        return HttpRequest("POST", self.settings.token_url, headers, form(fields))

    def parse_token(self, shop: str, reply: HttpReply, current: Token | None, now: float) -> Token:
        token = oauth_token(reply, current, now)
        if self.idle_lifetime and token.refresh_token and self.settings.grant_type == "refresh_token":
            token = dataclasses.replace(token, refresh_expires_at=now + self.idle_lifetime)
        return token

    def apply_auth(self, shop: str, request: OutgoingRequest, token: Token, now: float) -> OutgoingRequest:
        value = self.settings.header_format.replace("{token}", token.access_token)
        return with_header(request, self.settings.header, value)

    def should_inspect(self, status: int, headers: Any) -> bool:
        return status in self.settings.invalid_token_statuses

    def classify(self, reply: HttpReply) -> Verdict:
        if reply.status not in self.settings.invalid_token_statuses:
            return Verdict.OK
        if self.settings.invalid_token_field is None:
            return Verdict.TOKEN_INVALID
        found = _field(json_object(reply.body), self.settings.invalid_token_field)
        matches = found is not None and str(found) in self.settings.invalid_token_values
        return Verdict.TOKEN_INVALID if matches else Verdict.OK


def _field(data: Any, dotted: str) -> Any:
    """`error.code` in {"error": {"code": ...}}; list items by index."""
    for part in dotted.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data
