"""HmacSha256 against the standard library's HMAC."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from authproxy.platforms.signing import BLOCK, HmacSha256


@given(key=st.binary(max_size=3 * BLOCK), messages=st.lists(st.binary(max_size=500), max_size=4))
def test_it_signs_as_hmac_does_for_any_key_and_message(key, messages):
    signer = HmacSha256(key)
    for message in messages:  # one signer, many messages: its states are copied, never changed
        assert signer.hexdigest(message) == hmac.digest(key, message, "sha256").hex()


def test_keys_of_the_block_size_and_one_more_are_each_handled():
    for key in (b"k" * BLOCK, b"k" * (BLOCK + 1), b""):
        assert HmacSha256(key).hexdigest(b"base") == hmac.new(key, b"base", "sha256").hexdigest()


def test_its_repr_shows_no_key_material():
    assert repr(HmacSha256(b"partner-key")) == "HmacSha256(<key>)"
