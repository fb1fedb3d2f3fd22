"""Routing and query handling (pure): vectors and properties."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authproxy.errors import BadPath
from authproxy.proxy.routing import parse_route
from authproxy.query import add_params, decoded_params, drop_params, redact_all, redact_query


def test_route_parts():
    route = parse_route("/shopee/merchant%3A42/api/v2/x%20y/z?a=1&b=%2F")
    assert (route.app, route.shop, route.path, route.query) == (
        "shopee",
        "merchant:42",
        "/api/v2/x%20y/z",
        "a=1&b=%2F",
    )
    assert parse_route("/a/b").path == "/"
    assert parse_route("/a/b/").path == "/"


@pytest.mark.parametrize(
    "target",
    [
        "/a/b/../c",
        "/a/b/%2e%2E/c",
        "/a/b/%252e%252e/c",
        "/a/b/x%2f..%2fy",
        "/a/b/x\\y",
        "/a/b/x%5cy",
        "/a/b/x%00",
        "/a/./c",
        "/a//c",
        "/a",
        "a/b/c",
        "/a/b%20c/x",
        "/a/.hidden/x",
        "/a/b%0A/x",  # a regex's $ matches before a trailing newline: names are matched whole
    ],
)
def test_bad_targets(target):
    with pytest.raises(BadPath):
        parse_route(target)


segment = st.text(st.characters(codec="utf-8", exclude_characters="\x00/\\"), min_size=1, max_size=8)


@given(st.lists(segment, min_size=1, max_size=5), st.integers(0, 2))
def test_no_accepted_path_decodes_to_a_traversal(parts, encodings):
    path = "/".join(parts)
    for _ in range(encodings):
        path = quote(path, safe="/")
    try:
        route = parse_route(f"/app/shop/{path}")
    except BadPath:
        return
    decoded = route.path
    for _ in range(4):
        assert ".." not in decoded.split("/") and "\\" not in decoded
        decoded = (
            decoded.replace("%25", "%")
            .replace("%2e", ".")
            .replace("%2E", ".")
            .replace("%2f", "/")
            .replace("%2F", "/")
        )


query_key = st.sampled_from(["a", "b", "sign", "access_token", "x y", "é"])
query_value = st.text(max_size=6)


@given(st.lists(st.tuples(query_key, query_value), max_size=6))
def test_drop_params_keeps_every_other_byte(pairs):
    raw = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)
    kept = drop_params(raw, {"sign", "access_token"})
    assert kept == "&".join(s for s in raw.split("&") if s.split("=")[0] not in ("sign", "access_token"))
    assert all(k not in ("sign", "access_token") for k, _ in decoded_params(kept))


def test_add_params_and_decode_roundtrip():
    query = add_params("z=1", [("sign", "a b/c"), ("t", "é")])
    assert query == "z=1&sign=a%20b%2Fc&t=%C3%A9"
    assert decoded_params(query) == [("z", "1"), ("sign", "a b/c"), ("t", "é")]
    assert add_params("", [("a", "1")]) == "a=1"


def test_added_params_holding_the_separators_are_encoded():
    assert add_params("", [("a", "b=c"), ("d", "1")]) == "a=b%3Dc&d=1"
    assert add_params("", [("a&b", "1"), ("c", "")]) == "a%26b=1&c="
    assert add_params("", [("a", "="), ("b", "&")]) == "a=%3D&b=%26"
    assert add_params("q", []) == "q"


@given(
    st.lists(
        st.tuples(
            st.text("ab=&%é ", max_size=6) | st.text(max_size=12),
            st.text("ab=&%é ", max_size=6) | st.text(max_size=12),
        ),
        max_size=4,
    )
)
def test_added_params_are_encoded_as_quote_encodes_them(pairs):
    expected = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    assert add_params("", pairs) == expected
    assert decoded_params(add_params("", pairs)) == pairs


def test_redact_query():
    secrets = frozenset({"access_token", "sign"})
    assert redact_query("a=1&access_token=xyz&sign=abc&Sign=q", secrets) == (
        "a=1&access_token=***&sign=***&Sign=***"
    )
    assert redact_query("code=c&state=s&refresh_token=r") == "code=***&state=s&refresh_token=***"


def test_redact_all_hides_every_value():
    assert redact_all("https://h/p?app_secret=s&x=1") == "https://h/p?app_secret=***&x=***"
    assert redact_all("https://h/p") == "https://h/p"


def test_reprs_carry_no_secret():
    from authproxy.models import HttpRequest, Token, TokenRecord

    request = HttpRequest(
        "GET", "https://auth/t?app_key=k&app_secret=S3CRET&refresh_token=R3FRESH", {"A": "B"}
    )
    token = Token(access_token="ACC3SS", expires_at=1.0, obtained_at=0.0, refresh_token="R3FRESH")
    text = repr(request) + repr(token) + repr(TokenRecord(token=token))
    for secret in ("S3CRET", "R3FRESH", "ACC3SS"):
        assert secret not in text
    assert "https://auth/t?app_key=***" in repr(request)  # every value hidden: no list to forget
