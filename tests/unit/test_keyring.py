"""The keyring and the record codec: what seals, what opens, what is refused and how it is said."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authproxy.errors import ConfigError, SecretUndecryptable
from authproxy.keyring import (
    Binding,
    Keyring,
    build_keyring,
    key_id_of,
    new_key_line,
    parse_keys,
    unwrap_secret,
    wrap_secret,
)
from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus
from authproxy.settings import ServerSettings
from authproxy.store.codec import decode, encode, sealed_with

K1, K2 = bytes(range(32)), bytes(range(32, 64))
B64_K1 = base64.b64encode(K1).decode()
A = Binding("token", "shopee", "1001", "refresh_token")


def ring(active: str = "k1") -> Keyring:
    return Keyring({"k1": K1, "k2": K2}, active)


def record(access: str = "at-secret-1", refresh: str | None = "rt-secret-1") -> TokenRecord:
    token = Token(access, 1_700_000_100.0, 1_700_000_000.0, refresh, None, {"shop_cipher": "ROW_1"})
    return TokenRecord(token=token, version=3, failures=1, retry_at=5.0, last_refresh=1.0, last_error="e")


def test_seal_opens_under_the_same_binding_only():
    keyring = ring()
    envelope = keyring.seal("the-token", A)
    assert envelope.startswith("v1:k1:") and "the-token" not in envelope
    assert keyring.open(envelope, A) == "the-token"
    assert keyring.seal("the-token", A) != envelope  # a fresh nonce every time
    for other in (
        Binding("token", "shopee", "1002", "refresh_token"),  # another shop
        Binding("token", "tiktok", "1001", "refresh_token"),  # another app
        Binding("token", "shopee", "1001", "access_token"),  # another field
        Binding("event", "shopee", "1001", "refresh_token"),  # another kind of record
    ):
        with pytest.raises(SecretUndecryptable) as refused:
            keyring.open(envelope, other)
        assert refused.value.reason == "mismatch" and refused.value.status == 500
        assert "the-token" not in refused.value.detail


def test_binding_fields_cannot_be_shifted_into_each_other():
    keyring = ring()
    envelope = keyring.seal("x", Binding("token", "a:b", "c", "f"))
    with pytest.raises(SecretUndecryptable):
        keyring.open(envelope, Binding("token", "a", "b:c", "f"))


def test_any_key_of_the_ring_opens_what_it_sealed_and_the_active_one_seals():
    old = ring("k1").seal("s", A)
    new = ring("k2")
    assert new.open(old, A) == "s"
    assert key_id_of(new.seal("s", A)) == "k2"


def test_unknown_key_altered_and_malformed_envelopes_are_refused_naming_the_key_only():
    sealed = ring().seal("s3cr3t", A)
    with pytest.raises(SecretUndecryptable) as unknown:
        Keyring({"k2": K2}, "k2").open(sealed, A)
    assert unknown.value.reason == "unknown_key" and "'k1'" in unknown.value.detail
    header, body = sealed.rsplit(":", 1)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(SecretUndecryptable) as altered:
        ring().open(f"{header}:{flipped}", A)
    assert altered.value.reason == "mismatch"
    with pytest.raises(SecretUndecryptable) as renamed:  # the header is authenticated too
        ring().open(sealed.replace("v1:k1:", "v1:k2:"), A)
    assert renamed.value.reason == "mismatch"
    for junk in ("", "v1:k1:", "v2:k1:abc", "plain-token", "v1:bad id:abc"):
        with pytest.raises(SecretUndecryptable) as malformed:
            ring().open(junk, A)
        assert malformed.value.reason == "malformed"


@given(st.text())
def test_wrap_then_unwrap_gives_the_secret_back(secret):
    assert unwrap_secret(wrap_secret(secret, A, ring()), A, ring()) == secret
    assert wrap_secret(secret, A, None) == secret  # no keyring: stored plain
    assert unwrap_secret(secret, A, ring()) == secret  # plain is read with a keyring too


def test_a_sealed_value_without_a_keyring_names_its_key():
    with pytest.raises(SecretUndecryptable) as refused:
        unwrap_secret(wrap_secret("s", A, ring()), A, None)
    assert refused.value.reason == "unknown_key" and "'k1'" in refused.value.detail


# -- the record codec -----------------------------------------------------------------------


def test_records_round_trip_sealed_and_plain():
    key = TokenKey("shopee", "1001")
    for keyring in (None, ring()):
        for rec in (record(), record(refresh=None), TokenRecord(token=None, status=TokenStatus.OK)):
            raw = encode(rec, key, keyring)
            assert decode(raw, rec.version, key, keyring) == rec


def test_every_secret_field_is_sealed_and_extra_stays_readable():
    raw = encode(record(), TokenKey("shopee", "1001"), ring())
    assert "at-secret-1" not in raw and "rt-secret-1" not in raw
    token = json.loads(raw)["token"]
    assert token["extra"] == {"shop_cipher": "ROW_1"}
    assert "access_token" not in token and "refresh_token" not in token
    assert key_id_of(token["sealed"]) == "k1"
    assert sealed_with(raw) == {"k1"}
    assert sealed_with(encode(record(), TokenKey("shopee", "1001"), None)) == {""}
    assert sealed_with(encode(TokenRecord(token=None), TokenKey("a", "b"), ring())) == frozenset()


def test_a_record_copied_to_another_shop_or_app_does_not_decode():
    raw = encode(record(), TokenKey("shopee", "1001"), ring())
    for other in (TokenKey("shopee", "1002"), TokenKey("tiktok", "1001")):
        with pytest.raises(SecretUndecryptable) as refused:
            decode(raw, 1, other, ring())
        assert refused.value.reason == "mismatch" and "at-secret-1" not in refused.value.detail
    with pytest.raises(SecretUndecryptable, match="no keyring is configured") as unkeyed:
        decode(raw, 1, TokenKey("shopee", "1001"), None)
    assert unkeyed.value.reason == "unknown_key"


def test_a_plain_record_is_read_with_a_keyring_and_sealed_when_written_again():
    key = TokenKey("shopee", "1001")
    plain = encode(record(), key, None)
    read = decode(plain, 3, key, ring("k2"))
    assert read == record()
    assert sealed_with(encode(read, key, ring("k2"))) == {"k2"}


# -- configuration ------------------------------------------------------------------------------


def test_keys_parse_from_commas_lines_and_comments_and_errors_never_echo_material():
    k2 = base64.urlsafe_b64encode(K2).decode().rstrip("=")  # url-safe, unpadded is accepted too
    assert parse_keys(f"k1:{B64_K1}, k2:{k2}", "s") == {"k1": K1, "k2": K2}
    assert parse_keys(f"# rotated 2026-11\nk1:{B64_K1}\n\nk2:{k2}  # new\n", "s") == {"k1": K1, "k2": K2}
    short = base64.b64encode(b"0123456789abcdef").decode()
    cases = {
        f"k1:{short}": "16 bytes, not 32",
        "k1:not*base64*at*all": "not base64",
        f"bad id:{B64_K1}": "key 1",
        B64_K1: "key 1",
        f"k1:{B64_K1},k1:{B64_K1}": "given twice",
    }
    for text, said in cases.items():
        with pytest.raises(ConfigError) as refused:
            parse_keys(text, "server.keys")
        assert said in str(refused.value)
        assert B64_K1 not in str(refused.value) and short not in str(refused.value)


def test_the_active_key_must_be_in_the_ring_and_named_when_there_are_several():
    keys = {"k1": K1, "k2": K2}
    assert build_keyring({}, "", "s") is None
    assert build_keyring({"k1": K1}, "", "s").active == "k1"  # type: ignore[union-attr]
    assert build_keyring(keys, "k2", "s").active == "k2"  # type: ignore[union-attr]
    for active, said in (("", "name one server.active_key"), ("k3", "'k3' is not in the keyring")):
        with pytest.raises(ConfigError, match=said):
            build_keyring(keys, active, "s")
    with pytest.raises(ConfigError, match="no keys"):
        build_keyring({}, "k1", "s")


def test_settings_take_keys_from_the_environment_or_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTHPROXY_KEYS", f"k1:{B64_K1}")
    assert ServerSettings().key_text() == (f"k1:{B64_K1}", "server.keys")
    monkeypatch.delenv("AUTHPROXY_KEYS")
    keys_file = tmp_path / "keys"
    keys_file.write_text(new_key_line("k7") + "\n" + new_key_line("k8") + "\n")
    server = ServerSettings(keys_file=str(keys_file), active_key="k8")
    text, source = server.key_text()
    assert parse_keys(text, source).keys() == {"k7", "k8"}
    with pytest.raises(ValueError, match="not both"):
        ServerSettings(keys=f"k1:{B64_K1}", keys_file=str(keys_file), active_key="k8")
    with pytest.raises(ValueError, match="'k9' is not in the keyring"):
        ServerSettings(keys_file=str(keys_file), active_key="k9")
    assert "k1:" not in repr(ServerSettings(keys=f"k1:{B64_K1}")) and B64_K1 not in repr(ring())


def test_a_generated_key_line_parses():
    kid, _, material = new_key_line("k2").partition(":")
    assert kid == "k2" and len(base64.b64decode(material)) == 32
    with pytest.raises(ConfigError):
        new_key_line("no spaces")
