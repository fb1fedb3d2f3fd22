"""TokenRecord <-> JSON, the one format both stores keep."""

from __future__ import annotations

import json
from typing import Any

from authproxy.models import Token, TokenRecord, TokenStatus


def encode(record: TokenRecord) -> str:
    token = record.token
    data: dict[str, Any] = {
        "status": record.status.value,
        "failures": record.failures,
        "retry_at": record.retry_at,
        "last_refresh": record.last_refresh,
        "last_error": record.last_error,
        "token": None,
    }
    if token is not None:
        data["token"] = {
            "access_token": token.access_token,
            "expires_at": token.expires_at,
            "obtained_at": token.obtained_at,
            "refresh_token": token.refresh_token,
            "refresh_expires_at": token.refresh_expires_at,
            "extra": dict(token.extra),
        }
    return json.dumps(data, separators=(",", ":"))


def decode(raw: str | bytes, version: int) -> TokenRecord:
    data = json.loads(raw)
    token_data = data.get("token")
    token = None
    if token_data is not None:
        token = Token(
            access_token=token_data["access_token"],
            expires_at=token_data["expires_at"],
            obtained_at=token_data["obtained_at"],
            refresh_token=token_data.get("refresh_token"),
            refresh_expires_at=token_data.get("refresh_expires_at"),
            extra=token_data.get("extra") or {},
        )
    return TokenRecord(
        token=token,
        version=version,
        status=TokenStatus(data.get("status", "ok")),
        failures=int(data.get("failures", 0)),
        retry_at=float(data.get("retry_at", 0.0)),
        last_refresh=data.get("last_refresh"),
        last_error=data.get("last_error", ""),
    )
