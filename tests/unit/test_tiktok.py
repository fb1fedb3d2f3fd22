"""TikTok Shop platform module (pure): signing vectors, auth, tokens, classification."""

from __future__ import annotations

import gzip
import json
from urllib.parse import parse_qsl, urlsplit

import pytest
from multidict import CIMultiDict

from authproxy.errors import ConfigError, RefreshError, RefreshRejected
from authproxy.models import HttpReply, OutgoingRequest, Token, Verdict
from authproxy.platforms import build_platform
from authproxy.platforms.tiktok import TikTok, sign, string_to_sign, takes_shop_cipher
from authproxy.settings import TikTokApp

NOW = 1_700_000_000.0
SECRET = "app-secret-1"


def platform(**overrides: object) -> TikTok:
    config: dict[str, object] = {"platform": "tiktok", "app_key": "key-1", "app_secret": SECRET}
    config.update(overrides)
    built = build_platform(TikTokApp.model_validate(config))
    assert isinstance(built, TikTok)
    return built


def token(**extra: str) -> Token:
    return Token("at-1", NOW + 3600, NOW, refresh_token="rt-1", extra=extra)


def request(
    method: str = "GET",
    path: str = "/order/202309/orders",
    query: str = "",
    body: bytes | None = b"",
    **headers: str,
) -> OutgoingRequest:
    return OutgoingRequest(method, path, query, tuple(headers.items()), body)


def query_of(out: OutgoingRequest) -> list[tuple[str, str]]:
    return parse_qsl(out.query, keep_blank_values=True)


# -- platforms.md §6 vectors -------------------------------------------------------------------


def test_official_vector_6_1() -> None:
    params = [("app_key", "29a39d"), ("timestamp", "1623812664")]
    assert string_to_sign("e59af819cc", "/authorization/202309/shops", params, None) == (
        b"e59af819cc/authorization/202309/shopsapp_key29a39dtimestamp1623812664e59af819cc"
    )
    assert sign("e59af819cc", "/authorization/202309/shops", params, None) == (
        "b596b73e0cc6de07ac26f036364178ab16b0a907af13d43f0a0cd2345f582dc8"
    )


def test_official_body_intermediate_string_6_1() -> None:
    body = b'{    "address":"https://partner.tiktokshop.com",    "event_type": "PACKAGE_UPDATE"}'
    params = [
        ("timestamp", "1696909648"),
        ("shop_cipher", "ROW_xkMbgAAAeVAQra0eZWebFQq5aIKt"),
        ("app_key", "68xu9ks5p4i8"),
    ]
    expected = (
        b"/event/202309/webhooksapp_key68xu9ks5p4i8shop_cipherROW_xkMbgAAAeVAQra0eZWebFQq5aIKt"
        b"timestamp1696909648" + body
    )
    assert string_to_sign("S", "/event/202309/webhooks", params, body) == b"S" + expected + b"S"


def test_sdk_vector_6_2() -> None:
    assert (
        string_to_sign("app_secret", "/test-api", [("foo", "bar")], None)
        == b"app_secret/test-apifoobarapp_secret"
    )
    assert sign("app_secret", "/test-api", [("foo", "bar")], None) == (
        "d3cb7fe11ecae942802ceeca67e7cf10120cc12f1517d45fbc1c8cfe5413c80f"
    )


def test_computed_vector_6_3() -> None:
    params = [("app_key", "123456"), ("timestamp", "1234567890")]
    assert sign("abc000def111", "/authorization/202309/shops", params, None) == (
        "c8767e4fd7a1b48a0ce3fd23197f058159ce11b53f1ae1ad6d1ec931a1da5540"
    )


def test_sign_and_access_token_are_never_signed_and_a_repeated_key_signs_its_first_value() -> None:
    plain = sign(SECRET, "/p", [("a", "1")], None)
    assert sign(SECRET, "/p", [("a", "1"), ("sign", "x"), ("access_token", "y")], None) == plain
    assert sign(SECRET, "/p", [("a", "1"), ("a", "2")], None) == plain


# -- apply_auth -------------------------------------------------------------------------------


def test_adds_app_key_timestamp_sign_and_the_token_header() -> None:
    out = platform().apply_auth("s", request(path="/authorization/202309/shops"), token(), NOW + 0.9)
    params = dict(query_of(out))
    assert params.keys() == {"app_key", "timestamp", "sign"}
    assert params["app_key"] == "key-1"
    assert params["timestamp"] == "1700000000"  # 10-digit seconds
    assert out.header("x-tts-access-token") == "at-1"
    expected = sign(
        SECRET, "/authorization/202309/shops", [("app_key", "key-1"), ("timestamp", "1700000000")], None
    )
    assert params["sign"] == expected


def test_signs_exactly_the_query_it_sends_with_decoded_values() -> None:
    raw = "page_size=10&q=a%20b+c&empty=&flag&z=%E2%9C%93"
    out = platform().apply_auth("s", request(query=raw), token(shop_cipher="C1"), NOW)
    assert out.query.startswith(raw + "&")  # the client's bytes are kept as sent
    sent = query_of(out)
    claimed = dict(sent)["sign"]
    assert claimed == sign(SECRET, "/order/202309/orders", [kv for kv in sent if kv[0] != "sign"], None)
    assert ("q", "a b c") in sent and ("z", "\u2713") in sent


def test_client_supplied_auth_parameters_and_header_are_replaced() -> None:
    raw = "app_key=evil&timestamp=1&sign=forged&access_token=leak&x=1"
    req = request(query=raw, **{"x-tts-access-token": "client-token"})
    out = platform().apply_auth("s", req, token(), NOW)
    names = [key for key, _ in query_of(out)]
    assert sorted(names) == ["app_key", "sign", "timestamp", "x"]
    assert dict(query_of(out))["app_key"] == "key-1"
    assert [v for k, v in out.headers if k.lower() == "x-tts-access-token"] == ["at-1"]


def test_json_body_bytes_are_signed_verbatim() -> None:
    body = b'{ "a" :1,\n\t"b": [1, 2]  }'
    req = request("POST", body=body, **{"Content-Type": "application/json; charset=utf-8"})
    out = platform().apply_auth("s", req, token(), NOW)
    sent = query_of(out)
    unsigned = [kv for kv in sent if kv[0] != "sign"]
    assert dict(sent)["sign"] == sign(SECRET, "/order/202309/orders", unsigned, body)
    assert out.body == body


def test_multipart_body_is_not_signed() -> None:
    ctype = "multipart/form-data; boundary=xyz"
    one = platform().apply_auth("s", request("POST", body=b"one", **{"Content-Type": ctype}), token(), NOW)
    two = platform().apply_auth("s", request("POST", body=b"two", **{"Content-Type": ctype}), token(), NOW)
    assert one.query == two.query


def test_only_non_multipart_bodies_need_buffering() -> None:
    tiktok = platform()
    assert tiktok.needs_buffered_body(request("POST", **{"Content-Type": "application/json"}))
    assert tiktok.needs_buffered_body(request("POST"))
    assert not tiktok.needs_buffered_body(
        request("POST", **{"Content-Type": "multipart/form-data; boundary=b"})
    )


# -- shop_cipher --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "takes"),
    [
        ("GET", "/order/202309/orders", True),
        ("POST", "/product/202309/products/search", True),
        ("GET", "/product/202309/brands", True),
        ("POST", "/product/202309/brands", False),
        ("GET", "/authorization/202309/shops", False),
        ("GET", "/seller/202309/shops", False),
        ("POST", "/product/202309/global_products/search", False),
        ("POST", "/product/202309/files/upload", False),
        ("POST", "/product/202309/images/upload", False),
    ],
)
def test_shop_cipher_endpoints(method: str, path: str, takes: bool) -> None:
    assert takes_shop_cipher(method, path) is takes
    tiktok = platform(shops={"s": {"shop_cipher": "C1"}})
    out = tiktok.apply_auth("s", request(method, path), token(), NOW)
    assert (dict(query_of(out)).get("shop_cipher") == "C1") is takes
    assert ("shop_cipher" in dict(query_of(out))) is takes


def test_config_cipher_wins_over_stored_and_client_ciphers() -> None:
    tiktok = platform(shops={"s": {"shop_cipher": "CONFIG"}})
    out = tiktok.apply_auth("s", request(query="shop_cipher=CLIENT"), token(shop_cipher="STORED"), NOW)
    assert [v for k, v in query_of(out) if k == "shop_cipher"] == ["CONFIG"]


def test_stored_cipher_is_used_without_config_and_replaces_the_clients() -> None:
    out = platform().apply_auth("s", request(query="shop_cipher=CLIENT"), token(shop_cipher="STORED"), NOW)
    assert [v for k, v in query_of(out) if k == "shop_cipher"] == ["STORED"]


def test_client_cipher_is_kept_when_the_proxy_knows_none() -> None:
    out = platform().apply_auth("s", request(query="shop_cipher=CLIENT"), token(), NOW)
    assert [v for k, v in query_of(out) if k == "shop_cipher"] == ["CLIENT"]


def test_a_known_cipher_drops_the_clients_on_endpoints_that_refuse_one() -> None:
    tiktok = platform(shops={"s": {"shop_cipher": "C1"}})
    out = tiktok.apply_auth(
        "s", request(path="/authorization/202309/shops", query="shop_cipher=X"), token(), NOW
    )
    assert "shop_cipher" not in dict(query_of(out))


# -- classification -----------------------------------------------------------------------------


def reply(body: object, status: int = 200, **headers: str) -> HttpReply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpReply.received(status, CIMultiDict({"Content-Type": "application/json", **headers}), raw)


@pytest.mark.parametrize("status", [200, 401, 403, 500])
def test_105002_means_refresh_whatever_the_status(status: int) -> None:
    msg = "Expired credentials. The `x-tts-access-token` header has expired."
    assert platform().classify(reply({"code": 105002, "message": msg}, status)) is Verdict.TOKEN_INVALID


@pytest.mark.parametrize(
    "message",
    [
        "Invalid credentials. The `x-tts-access-token` header is invalid.",
        "Invalid credentials. The `access_token` header is invalid.",
    ],
)
def test_36009004_about_the_token_header_means_refresh(message: str) -> None:
    assert platform().classify(reply({"code": 36009004, "message": message})) is Verdict.TOKEN_INVALID


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (106001, "Invalid credentials. The 'sign' query parameter is invalid."),
        (105005, "Access denied. The app is not authorized to access the endpoint."),
        (36009002, "Too many requests."),
        (
            101000,
            "Invalid query or header. The `category_asset_cipher` query parameter or "
            "`x-tts-access-token` header is invalid.",
        ),
        (36009033, "Access denied. Your IP address is not in the IP allow list configured for this app."),
        (
            106013,
            "Missing identifier. The `shop_cipher` query parameter is required to identify the target shop.",
        ),
        (36009004, "Invalid credentials. Invalid `app_key` query parameter."),
        (36009004, "Missing credentials. The request does not include a required signature in the query."),
        (
            36009004,
            "Invalid timestamp. The value of the `timestamp` query parameter must not be lesser than 0.",
        ),
        (
            36009004,
            "Unexpected identifier. The `shop_cipher` query parameter is not required for this request.",
        ),
        (0, "Success"),
    ],
)
def test_other_codes_pass_through(code: int, message: str) -> None:
    assert platform().classify(reply({"code": code, "message": message}, 401)) is Verdict.OK


def test_classify_reads_string_codes_gzip_and_ignores_garbage() -> None:
    tiktok = platform()
    assert tiktok.classify(reply({"code": "105002"})) is Verdict.TOKEN_INVALID
    zipped = gzip.compress(json.dumps({"code": 105002}).encode())
    assert tiktok.classify(reply(zipped, 401, **{"Content-Encoding": "gzip"})) is Verdict.TOKEN_INVALID
    assert tiktok.classify(reply(b"<html>oops</html>", 502)) is Verdict.OK
    assert tiktok.classify(reply(b"\x1f\x8bnot gzip", 401, **{"Content-Encoding": "gzip"})) is Verdict.OK
    assert tiktok.classify(reply([105002])) is Verdict.OK


def test_inspects_json_replies_of_any_status_that_fit_the_head() -> None:
    tiktok = platform()
    assert tiktok.should_inspect(200, {"Content-Type": "application/json; charset=utf-8"})
    assert tiktok.should_inspect(401, {"Content-Type": "application/json"})
    assert tiktok.should_inspect(200, {"Content-Type": "application/problem+json", "Content-Length": "100"})
    assert not tiktok.should_inspect(200, {"Content-Type": "application/octet-stream"})
    assert not tiktok.should_inspect(200, {"Content-Type": "application/json", "Content-Length": str(70_000)})


# -- tokens ---------------------------------------------------------------------------------------


def test_refresh_request_is_an_unsigned_get_with_the_app_credentials() -> None:
    req = platform(auth_url="https://auth.example/").token_request("s", token(), NOW)
    assert req is not None and req.method == "GET" and req.body is None
    url = urlsplit(req.url)
    assert (url.scheme, url.netloc, url.path) == ("https", "auth.example", "/api/v2/token/refresh")
    assert dict(parse_qsl(url.query)) == {
        "app_key": "key-1",
        "app_secret": SECRET,
        "refresh_token": "rt-1",
        "grant_type": "refresh_token",
    }


def test_token_request_repr_hides_the_secrets() -> None:
    req = platform().token_request("s", token(), NOW)
    assert req is not None and req.url.startswith("https://auth.tiktok-shops.com/api/v2/token/refresh?")
    assert SECRET not in repr(req) and "rt-1" not in repr(req) and SECRET not in str(req)


def test_stored_refresh_token_wins_over_the_seed_and_none_without_either() -> None:
    tiktok = platform(shops={"s": {"refresh_token": "seed"}})
    seeded = tiktok.token_request("s", None, NOW)
    assert seeded is not None and "refresh_token=seed" in seeded.url
    stored = tiktok.token_request("s", token(), NOW)
    assert stored is not None and "refresh_token=rt-1" in stored.url
    assert platform().token_request("s", None, NOW) is None


def answer(data: dict[str, object] | None = None, code: int = 0, status: int = 200) -> HttpReply:
    body: dict[str, object] = {"code": code, "message": "success" if code == 0 else "nope", "request_id": "r"}
    if data is not None:
        body["data"] = data
    return HttpReply(status, {}, json.dumps(body).encode())


def test_parse_token_reads_absolute_expiry_stamps_and_keeps_the_returned_refresh_token() -> None:
    data = {
        "access_token": "at-2",
        "access_token_expire_in": int(NOW) + 604800,
        "refresh_token": "rt-2",
        "refresh_token_expire_in": 4841467787,
        "open_id": "oid",
        "seller_name": "Shop",
        "user_type": 0,
    }
    new = platform().parse_token("s", answer(data), token(shop_cipher="C1"), NOW)
    assert (new.access_token, new.refresh_token) == ("at-2", "rt-2")
    assert new.expires_at == NOW + 604800 and new.lifetime() == 604800
    assert new.refresh_expires_at == 4841467787
    assert new.extra == {"shop_cipher": "C1", "open_id": "oid", "seller_name": "Shop"}


def test_parse_token_keeps_the_old_refresh_token_when_none_is_returned() -> None:
    data = {"access_token": "at-2", "access_token_expire_in": int(NOW) + 60}
    old = Token("at-1", NOW, NOW - 60, refresh_token="rt-1", refresh_expires_at=NOW + 999)
    new = platform().parse_token("s", answer(data), old, NOW)
    assert (new.refresh_token, new.refresh_expires_at) == ("rt-1", NOW + 999)


def test_parse_token_reads_a_small_expiry_as_a_duration() -> None:
    data = {"access_token": "at-2", "access_token_expire_in": 604800, "refresh_token": "rt-2"}
    assert platform().parse_token("s", answer(data), None, NOW).expires_at == NOW + 604800


@pytest.mark.parametrize("code", [36004001, 36004005, 36004004])
def test_dead_grant_codes_are_rejections(code: int) -> None:
    with pytest.raises(RefreshRejected):
        platform().parse_token("s", answer(code=code), token(), NOW)


@pytest.mark.parametrize(
    "reply_",
    [
        answer(code=36009002),  # unknown / transient code: back off, do not lock the shop out
        answer(code=36009004),
        answer(),  # success without data
        answer({"access_token": ""}),
        HttpReply(503, {}, b'{"code": 0}'),
        HttpReply(200, {}, b"<html>"),
    ],
)
def test_other_token_answers_are_failures(reply_: HttpReply) -> None:
    with pytest.raises(RefreshError) as caught:
        platform().parse_token("s", reply_, token(), NOW)
    assert SECRET not in str(caught.value) and "rt-1" not in str(caught.value)


# -- seller authorization -------------------------------------------------------------------------


def test_authorize_url() -> None:
    assert platform(service_id="7431").authorize_url(None, "s t", NOW) == (
        "https://services.tiktokshop.com/open/authorize?service_id=7431&state=s%20t"
    )
    us = platform(service_id="7369", authorize_url="https://services.tiktokshops.us/open/authorize")
    assert us.authorize_url("ignored", "x", NOW).startswith("https://services.tiktokshops.us/open/authorize?")
    with pytest.raises(ConfigError):
        platform().authorize_url(None, "x", NOW)


def test_code_request() -> None:
    req = platform().code_request("s", "TTP_code", None, NOW)
    url = urlsplit(req.url)
    assert req.method == "GET" and url.path == "/api/v2/token/get"
    assert dict(parse_qsl(url.query)) == {
        "app_key": "key-1",
        "app_secret": SECRET,
        "auth_code": "TTP_code",
        "grant_type": "authorized_code",
    }
    assert "TTP_code" not in repr(req)


# -- Get Authorized Shops: the shop's cipher --------------------------------------------------------


def shops_reply(*shops: dict[str, str], code: int = 0, status: int = 200) -> HttpReply:
    body = {"code": code, "message": "Success", "request_id": "r", "data": {"shops": list(shops)}}
    return HttpReply(status, CIMultiDict({"Content-Type": "application/json"}), json.dumps(body).encode())


A = {
    "cipher": "ROW_a",
    "code": "GBLCA",
    "id": "7001",
    "name": "Alpha",
    "region": "GB",
    "seller_type": "LOCAL",
}
B = {"cipher": "ROW_b", "code": "USLCB", "id": "7002", "name": "Beta", "region": "US", "seller_type": "LOCAL"}


def test_a_sellers_only_shop_is_the_shop() -> None:
    details = platform().parse_details("anything", shops_reply(A))
    assert details == {
        "authorized_shops": "7001 (GB)",
        "shop_cipher": "ROW_a",
        "shop_id": "7001",
        "shop_name": "Alpha",
        "shop_region": "GB",
    }


@pytest.mark.parametrize("segment", ["7002", "USLCB", "Beta", "ROW_b"])
def test_one_of_several_shops_is_the_one_the_segment_names(segment: str) -> None:
    details = platform().parse_details(segment, shops_reply(A, B))
    assert details is not None and details["shop_cipher"] == "ROW_b"


def test_several_shops_none_named_keeps_only_the_list() -> None:
    details = platform().parse_details("mine", shops_reply(A, B))
    assert details == {"authorized_shops": "7001 (GB), 7002 (US)"}
    assert not platform().lacks_details("mine", token(**details))  # looked up: not asked again


@pytest.mark.parametrize("reply", [shops_reply(code=105002, status=401), shops_reply(code=36009004)])
def test_an_error_is_no_answer(reply: HttpReply) -> None:
    assert platform().parse_details("s", reply) is None


def test_details_are_wanted_only_without_a_cipher_anywhere() -> None:
    assert platform().lacks_details("s", token())
    assert not platform().lacks_details("s", token(shop_cipher="C"))
    assert not platform(shops={"s": {"shop_cipher": "CONFIG"}}).lacks_details("s", token())


def test_the_lookup_is_signed_and_carries_no_cipher() -> None:
    out = platform().details_request("s", token(), NOW)
    assert (out.method, out.path) == ("GET", "/authorization/202309/shops")
    assert sorted(k for k, _ in parse_qsl(out.query)) == ["app_key", "sign", "timestamp"]
    assert out.header("x-tts-access-token") == token().access_token
