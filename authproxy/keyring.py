"""The keyring: AES-256-GCM keys that seal every secret authproxy stores.

    AUTHPROXY_KEYS="k1:<base64 of 32 bytes>,k2:<base64 of 32 bytes>"   (or server.keys,
    server.keys_file; lines or commas)   server.active_key = "k2"

New secrets are sealed under the active key; any key of the ring opens what
it sealed, so a key is added everywhere before it becomes active, and
removed only after `authproxy keys rotate` moved every record off it.

A sealed secret is an envelope, `v1:<key id>:<base64(nonce | ciphertext | tag)>`:
the version and the key id in clear (so a record names the key it needs), a
random 96-bit nonce per seal. The associated data is the envelope's header
plus a `Binding` (what kind of record, app, shop, field): an envelope copied
to another shop's record, or to another field, does not open.

Token records seal their secrets in store/codec.py. Any other stored secret
(the events stream, webhook secrets) uses `wrap_secret` / `unwrap_secret`: a
JSON value, the plain string without a keyring, `{"sealed": envelope}` with
one (either is read back), under a `Binding` of its own `kind` ("event", ...);
`sealed_key_id` tells which key a stored value needs.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from authproxy.errors import ConfigError, SecretUndecryptable

ENVELOPE_VERSION = "v1"
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
KEY_BYTES = 32
NONCE_BYTES = 12
SEALED = "sealed"  # the JSON member of a sealed value: {"sealed": "v1:k2:..."}


class Binding(NamedTuple):  # a tuple: made twice per record read, a frozen dataclass costs 4x more
    """What a ciphertext belongs to: it opens only for the same four values."""

    kind: str  # "token" (a stored token record), "event", ...
    app: str
    shop: str
    field: str

    def associated_data(self, header: str) -> bytes:
        # each part length-prefixed: unambiguous whatever characters the names hold
        kind, app, shop, field = self.kind, self.app, self.shop, self.field
        return f"{header}{len(kind)}:{kind}{len(app)}:{app}{len(shop)}:{shop}{len(field)}:{field}".encode()

    def __str__(self) -> str:
        return f"{self.app}/{self.shop} {self.kind}.{self.field}"


class Keyring:
    """Key id -> AES-256-GCM key; one of them active. Built once at start-up."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ConfigError(f"server.active_key {active!r} is not in the keyring ({_ids(keys)})")
        self._ciphers = {kid: AESGCM(key) for kid, key in keys.items()}
        self.active = active

    def __repr__(self) -> str:
        return f"Keyring(ids={sorted(self._ciphers)}, active={self.active!r})"

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._ciphers)

    def seal(self, plaintext: str, binding: Binding) -> str:
        header = f"{ENVELOPE_VERSION}:{self.active}:"
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.active].encrypt(
            nonce, plaintext.encode(), binding.associated_data(header)
        )
        return header + binascii.b2a_base64(nonce + sealed, newline=False).decode()

    def open(self, envelope: str, binding: Binding) -> str:
        """The plaintext, or SecretUndecryptable (its detail names the key id, never a secret)."""
        _, kid, body = _split(envelope, binding)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            if not KEY_ID.fullmatch(kid):
                raise SecretUndecryptable(
                    f"{binding} is not a {ENVELOPE_VERSION} envelope", reason="malformed"
                )
            raise SecretUndecryptable(
                f"{binding} is sealed with key {kid!r}, which is not in the keyring ({_ids(self._ciphers)})",
                reason="unknown_key",
            )
        try:
            raw = binascii.a2b_base64(body, strict_mode=True)
            header = envelope[: len(envelope) - len(body)]  # "v1:<kid>:"
            plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], binding.associated_data(header))
        except (InvalidTag, ValueError, binascii.Error):
            raise SecretUndecryptable(
                f"{binding} does not decrypt under key {kid!r}: it was copied from another record "
                "or altered, or the key behind that id changed",
                reason="mismatch",
            ) from None
        return plain.decode()


def key_id_of(envelope: str) -> str | None:
    """The key id an envelope names (None: not an envelope)."""
    version, _, rest = envelope.partition(":")
    kid, found, _ = rest.partition(":")
    return kid if version == ENVELOPE_VERSION and found and KEY_ID.fullmatch(kid) else None


def _split(envelope: str, binding: Binding) -> tuple[str, str, str]:
    parts = envelope.split(":", 2)
    if len(parts) != 3 or parts[0] != ENVELOPE_VERSION or not parts[2]:
        raise SecretUndecryptable(f"{binding} is not a {ENVELOPE_VERSION} envelope", reason="malformed")
    return parts[0], parts[1], parts[2]


# -- JSON values: what records and events store ---------------------------------------------------


def wrap_secret(value: str, binding: Binding, keyring: Keyring | None) -> str | dict[str, str]:
    """The JSON value to store for `value`: sealed with a keyring, plain without."""
    if keyring is None:
        return value
    return {SEALED: keyring.seal(value, binding)}


def unwrap_secret(stored: Any, binding: Binding, keyring: Keyring | None) -> str:
    """The secret behind a stored JSON value, sealed or (written without a keyring) plain."""
    if isinstance(stored, str):
        return stored
    envelope = stored.get(SEALED) if isinstance(stored, dict) else None
    if not isinstance(envelope, str):
        raise SecretUndecryptable(f"{binding} is neither a string nor a sealed value", reason="malformed")
    return open_envelope(envelope, binding, keyring)


def open_envelope(envelope: str, binding: Binding, keyring: Keyring | None) -> str:
    """`keyring.open`, and without a keyring the error naming the key the envelope needs."""
    if keyring is None:
        raise SecretUndecryptable(
            f"{binding} is sealed with key {key_id_of(envelope)!r}, and no keyring is configured",
            reason="unknown_key",
        )
    return keyring.open(envelope, binding)


def sealed_key_id(stored: Any) -> str | None:
    """The key id of a stored JSON value ('' for a plain one, None for neither)."""
    if isinstance(stored, str):
        return ""
    envelope = stored.get(SEALED) if isinstance(stored, dict) else None
    return key_id_of(envelope) if isinstance(envelope, str) else None


# -- building it from the configuration ----------------------------------------------------------


def parse_keys(text: str, source: str) -> dict[str, bytes]:
    """`id:base64` items, separated by commas or new lines ('#' starts a comment).
    Errors name the item's position and id, never the key material."""
    keys: dict[str, bytes] = {}
    items = [item.strip() for line in text.splitlines() for item in line.split("#", 1)[0].split(",")]
    for position, item in enumerate((item for item in items if item), 1):
        kid, colon, material = item.partition(":")
        kid = kid.strip()
        if not colon or not KEY_ID.fullmatch(kid):
            raise ConfigError(f"{source}: key {position} is not 'id:base64' with an id of [A-Za-z0-9_.-]")
        if kid in keys:
            raise ConfigError(f"{source}: key id {kid!r} is given twice")
        keys[kid] = _key_bytes(material.strip(), f"{source}: key {kid!r}")
    return keys


def _key_bytes(material: str, where: str) -> bytes:
    try:
        standard = material.replace("-", "+").replace("_", "/")
        key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{where} is {len(key)} bytes, not {KEY_BYTES} (make one: authproxy keys generate)")
    return key


def build_keyring(keys: Mapping[str, bytes], active: str, source: str) -> Keyring | None:
    """The keyring the settings describe; None when no key is given."""
    if not keys:
        if active:
            raise ConfigError(f"{source}: server.active_key is {active!r} but no keys are given")
        return None
    if not active:
        if len(keys) > 1:
            raise ConfigError(f"{source}: several keys ({_ids(keys)}): name one server.active_key")
        active = next(iter(keys))
    if active not in keys:
        raise ConfigError(f"{source}: server.active_key {active!r} is not in the keyring ({_ids(keys)})")
    return Keyring(keys, active)


def new_key_line(kid: str) -> str:
    if not KEY_ID.fullmatch(kid):
        raise ConfigError(f"key id {kid!r}: use 1-32 of [A-Za-z0-9_.-]")
    return f"{kid}:{base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def _ids(keys: Mapping[str, object]) -> str:
    return ", ".join(sorted(keys)) or "no keys"
