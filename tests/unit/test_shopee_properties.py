"""Properties of Shopee signing: the shape of a sign, and which query bytes the proxy owns."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from authproxy.models import OutgoingRequest, Token
from authproxy.platforms.shopee import Shopee, base_string, sign
from authproxy.query import decoded_params, drop_params
from authproxy.settings import ShopeeApp

OWNED = ["partner_id", "timestamp", "access_token", "shop_id", "merchant_id", "sign"]
HEX64 = re.compile(r"^[0-9a-f]{64}$")
PLATFORM = Shopee(ShopeeApp(platform="shopee", partner_id=77, partner_key="k" * 64))

# raw query bytes a client may send: unreserved, sub-delims and percent escapes
PIECES = [*"abcXYZ019-._~!$'()*+,;:@/?", "%20", "%2F", "%E2%82%AC", "%73", "%", "sign", "shop_id"]
raw_text = st.lists(st.sampled_from(PIECES), max_size=8).map("".join)
segment = st.one_of(
    st.tuples(st.sampled_from([*OWNED, "SIGN", "page", "item_id", "sign_x"]), raw_text).map("=".join),
    raw_text.filter(lambda s: "=" not in s),
)


@given(key=st.text(max_size=80), base=st.text(max_size=300))
def test_sign_is_always_64_lowercase_hex(key, base):
    assert HEX64.match(sign(key, base))


@given(
    partner_id=st.integers(min_value=1, max_value=2**63),
    path=st.text(min_size=1, max_size=60).map(lambda p: "/" + p),
    timestamp=st.integers(min_value=0, max_value=2**40),
    token=st.text(max_size=40),
    account=st.integers(min_value=1, max_value=10**19).map(str),
)
def test_base_string_is_a_plain_concatenation(partner_id, path, timestamp, token, account):
    assert (
        base_string(partner_id, path, timestamp, token, account)
        == f"{partner_id}{path}{timestamp}{token}{account}"
    )


@given(
    segments=st.lists(segment, max_size=10),
    shop=st.one_of(
        st.integers(min_value=1, max_value=10**12).map(str),
        st.integers(min_value=1, max_value=10**12).map(lambda n: f"merchant:{n}"),
    ),
    now=st.floats(min_value=1e9, max_value=4e9),
)
def test_owned_params_are_replaced_and_every_other_byte_kept(segments, shop, now):
    query = "&".join(segments)
    kept = drop_params(query, PLATFORM.owned_query)  # what the handler forwards
    request = OutgoingRequest("GET", "/api/v2/product/get_item_list", kept, ())
    token = Token(access_token="tok", expires_at=None, obtained_at=0.0)
    signed = PLATFORM.apply_auth(shop, request, token, now)

    others = [s for s in segments if s and decoded_params(s)[0][0] not in OWNED]
    assert signed.query.startswith("&".join(others))
    params = decoded_params(signed.query)
    ours = [(k, v) for k, v in params if k in OWNED]
    assert [k for k, _ in params if k not in OWNED] == [decoded_params(s)[0][0] for s in others]
    kind = "merchant_id" if shop.startswith("merchant:") else "shop_id"
    number = shop.removeprefix("merchant:")
    expected_sign = sign("k" * 64, base_string(77, request.path, int(now), "tok", number))
    assert ours == [
        ("partner_id", "77"),
        ("timestamp", str(int(now))),
        ("access_token", "tok"),
        (kind, number),
        ("sign", expected_sign),
    ]
