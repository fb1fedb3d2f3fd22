"""Property tests of TikTok signing (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authproxy.models import OutgoingRequest, Token
from authproxy.platforms.tiktok import TikTok, sign, string_to_sign
from authproxy.settings import TikTokApp

NOW = 1_700_000_000.0
keys = st.text(st.characters(codec="utf-8", exclude_characters="&=+%#"), min_size=1, max_size=8)
values = st.text(st.characters(codec="utf-8"), max_size=12)
params = st.dictionaries(keys.filter(lambda k: k not in ("sign", "access_token")), values, max_size=6)
TIKTOK = TikTok(TikTokApp(platform="tiktok", app_key="k", app_secret="s"))  # type: ignore[arg-type]
TOKEN = Token("at", NOW + 60, NOW)


@given(params, st.randoms(use_true_random=False), st.binary(max_size=32))
def test_key_order_does_not_change_the_sign(items: dict[str, str], rnd: object, body: bytes) -> None:
    pairs = list(items.items())
    shuffled = pairs[:]
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert sign("secret", "/p", pairs, body) == sign("secret", "/p", shuffled, body)


@given(params, st.binary(min_size=1, max_size=64), st.binary(min_size=1, max_size=64))
def test_body_bytes_change_the_sign(items: dict[str, str], one: bytes, two: bytes) -> None:
    pairs = list(items.items())
    assert string_to_sign("s", "/p", pairs, one).endswith(one + b"s")
    if one != two:
        assert sign("s", "/p", pairs, one) != sign("s", "/p", pairs, two)


def request(ctype: str, body: bytes) -> OutgoingRequest:
    return OutgoingRequest("POST", "/product/202309/images/upload", "", (("Content-Type", ctype),), body)


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_multipart_ignores_the_body_and_json_does_not(one: bytes, two: bytes) -> None:
    multipart = "multipart/form-data; boundary=b"
    signed_one = TIKTOK.apply_auth("s", request(multipart, one), TOKEN, NOW)
    signed_two = TIKTOK.apply_auth("s", request(multipart, two), TOKEN, NOW)
    assert signed_one.query == signed_two.query
    json_one = TIKTOK.apply_auth("s", request("application/json", one), TOKEN, NOW)
    json_two = TIKTOK.apply_auth("s", request("application/json", two), TOKEN, NOW)
    assert (json_one.query == json_two.query) == (one == two)


@given(st.lists(st.tuples(keys, values), max_size=6))
def test_the_sign_sent_matches_the_query_sent(pairs: list[tuple[str, str]]) -> None:
    from urllib.parse import parse_qsl, urlencode

    raw = urlencode(pairs)
    out = TIKTOK.apply_auth("s", OutgoingRequest("GET", "/order/202309/orders", raw, ()), TOKEN, NOW)
    sent = parse_qsl(out.query, keep_blank_values=True)
    claimed = [v for k, v in sent if k == "sign"]
    assert claimed == [sign("s", "/order/202309/orders", [kv for kv in sent if kv[0] != "sign"], None)]
