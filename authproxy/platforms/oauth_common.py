"""Pieces shared by the OAuth2-shaped token endpoints (pure)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, urlencode

from authproxy.errors import RefreshError, RefreshRejected
from authproxy.models import HttpReply, Token

FORM = "application/x-www-form-urlencoded"
#: OAuth2 error codes (RFC 6749 §5.2) that mean the grant will never work again
FATAL_GRANT_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})


def basic_auth(client_id: str, client_secret: str) -> str:
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def form(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()


def json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def oauth_token(reply: HttpReply, current: Token | None, now: float) -> Token:
    """An RFC 6749 token answer; keeps the old refresh token when none is returned."""
    data = json_object(reply.body)
    if reply.status >= 500 or data is None:
        raise RefreshError(f"token endpoint answered HTTP {reply.status}")
    if reply.status >= 400 or "access_token" not in data:
        error = str(data.get("error", f"HTTP {reply.status}"))
        if error in FATAL_GRANT_ERRORS:
            raise RefreshRejected(f"token endpoint refused the grant: {error}")
        raise RefreshError(f"token endpoint error: {error} (HTTP {reply.status})")
    expires_in = data.get("expires_in")
    refresh = data.get("refresh_token") or (current.refresh_token if current else None)
    return Token(
        access_token=str(data["access_token"]),
        expires_at=now + float(expires_in) if expires_in is not None else None,
        obtained_at=now,
        refresh_token=refresh,
    )
