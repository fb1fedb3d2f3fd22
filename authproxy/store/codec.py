"""TokenRecord <-> JSON, the one format both stores keep.

With a keyring the record's secrets (`SECRET_FIELDS`) travel as one sealed
JSON object, `token.sealed` = "v1:<key id>:<base64>", whose associated data
binds it to the record's (app, shop) (keyring.py); the field names are inside
the authenticated plaintext, so fields cannot be swapped either. One AEAD
operation per read, one key id per record. Without a keyring the fields are
plain, as before; either form is read back, so a record written before the
keyring existed is read as is and sealed on its next write.

`extra` is stored plain: it holds only what a platform must know and an
operator may read (shop_cipher, seller name, e-shop URL; `tokens show` prints
it unmasked), so a platform that receives another secret gives it a field of
its own and lists it here.
"""

from __future__ import annotations

import json
from typing import Any

from authproxy.errors import SecretUndecryptable
from authproxy.keyring import Binding, Keyring, key_id_of, open_envelope
from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus

#: the Token fields that are secrets (Shoptet's OAuth token is its refresh_token)
SECRET_FIELDS = ("access_token", "refresh_token")
SEALED = "sealed"  # token.sealed: the envelope of {access_token, refresh_token}
RECORD, SECRETS = "token", "secrets"  # the Binding's kind and field


def _binding(key: TokenKey) -> Binding:
    return Binding(RECORD, key.app, key.shop, SECRETS)


def encode(record: TokenRecord, key: TokenKey, keyring: Keyring | None = None) -> str:
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
        secrets = {"access_token": token.access_token, "refresh_token": token.refresh_token}
        data["token"] = {
            "expires_at": token.expires_at,
            "obtained_at": token.obtained_at,
            "refresh_expires_at": token.refresh_expires_at,
            "extra": dict(token.extra),
            **(secrets if keyring is None else {SEALED: keyring.seal(json.dumps(secrets), _binding(key))}),
        }
        if token.authorized_until is not None:
            data["token"]["authorized_until"] = token.authorized_until
    return json.dumps(data, separators=(",", ":"))


def decode(raw: str | bytes, version: int, key: TokenKey, keyring: Keyring | None = None) -> TokenRecord:
    """The record; SecretUndecryptable when its sealed secrets do not open."""
    data = json.loads(raw)
    token_data = data.get("token")
    token = None
    if token_data is not None:
        secrets = _secrets(token_data, key, keyring)
        token = Token(
            access_token=secrets["access_token"],
            expires_at=token_data["expires_at"],
            obtained_at=token_data["obtained_at"],
            refresh_token=secrets.get("refresh_token"),
            refresh_expires_at=token_data.get("refresh_expires_at"),
            extra=token_data.get("extra") or {},
            authorized_until=token_data.get("authorized_until"),
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


def _secrets(token_data: dict[str, Any], key: TokenKey, keyring: Keyring | None) -> dict[str, Any]:
    envelope = token_data.get(SEALED)
    if envelope is None:
        return token_data  # written without a keyring
    if not isinstance(envelope, str):
        raise SecretUndecryptable(f"{_binding(key)} is not an envelope", reason="malformed")
    secrets = json.loads(open_envelope(envelope, _binding(key), keyring))
    if not isinstance(secrets, dict) or not isinstance(secrets.get("access_token"), str):
        raise SecretUndecryptable(f"{_binding(key)} holds no access token", reason="malformed")
    return secrets


def sealed_with(raw: str | bytes) -> frozenset[str]:
    """The key id a stored record's secrets are sealed with, without decrypting: {''} for a
    plain record; none for a record without a token (or with a malformed envelope)."""
    token_data = json.loads(raw).get("token")
    if token_data is None:
        return frozenset()
    envelope = token_data.get(SEALED)
    if envelope is None:
        return frozenset({""})
    kid = key_id_of(envelope) if isinstance(envelope, str) else None
    return frozenset() if kid is None else frozenset({kid})
