"""Shopee platform module: official vectors (platforms.md §6.4), requests, parsing, classification."""

from __future__ import annotations

import gzip
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from multidict import CIMultiDict

from authproxy.errors import ConfigError, RefreshError, RefreshRejected, UnknownShop
from authproxy.models import HttpReply, OutgoingRequest, Token, Verdict
from authproxy.platforms import build_platform
from authproxy.platforms.shopee import Shopee, base_string, sign
from authproxy.settings import ShopeeApp

KEY = "1391fd986fe8ec7569bebed75b0c33ee35eb5a305bed7038657a5cd5f75b1c88"
SHOP_TOKEN = "59777174636562737266615546704c6d"
MERCHANT_TOKEN = "09777174636962737266615546704c6d"
TS = 1655714431
NOW = 1_700_000_000.0

VECTORS = [
    (
        (2001887, "/api/v2/shop/get_shop_info", TS, SHOP_TOKEN, "14701711"),
        "2001887/api/v2/shop/get_shop_info165571443159777174636562737266615546704c6d14701711",
        "87407e32ecf3a44d7b7262be1fe2a80a3ac0f71b11ceddc74c984d308afb5aa6",
    ),
    (
        (2001887, "/api/v2/global_product/get_category", TS, MERCHANT_TOKEN, "1000000"),
        "2001887/api/v2/global_product/get_category165571443109777174636962737266615546704c6d1000000",
        "db0ff209754b0d1b0c7dc9f497d2aa7366eea172c1cec4c9fd94f891e8f2c149",
    ),
    (
        (2001887, "/api/v2/public/get_shops_by_partner", TS, "", ""),
        "2001887/api/v2/public/get_shops_by_partner1655714431",
        "1c35e367d9270ebea7f4aba889457b2e9f2ab8ab7b7b422bc9afa7c794612b12",
    ),
    (
        (1000016, "/api/v2/auth/access_token/get", 1657868745, "", ""),
        "1000016/api/v2/auth/access_token/get1657868745",
        "d9bcbaa9879ff9a0e26ccd31a5c2a4383c7d5d640ff1228f356ec270a3e7f304",
    ),
]


def shopee(partner_id: int = 2001887, **extra: object) -> Shopee:
    settings = ShopeeApp(platform="shopee", partner_id=partner_id, partner_key=KEY, **extra)
    platform = build_platform(settings)
    assert isinstance(platform, Shopee)
    return platform


def token(access: str = SHOP_TOKEN, refresh: str | None = "rt-old") -> Token:
    return Token(access_token=access, expires_at=NOW + 100, obtained_at=NOW, refresh_token=refresh)


def get(path: str, query: str = "") -> OutgoingRequest:
    return OutgoingRequest(method="GET", path=path, query=query, headers=())


def query_of(request: OutgoingRequest) -> dict[str, list[str]]:
    return parse_qs(request.query, keep_blank_values=True)


def reply(data: object, status: int = 200, headers: dict[str, str] | None = None) -> HttpReply:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return HttpReply.received(status, CIMultiDict(headers or {"Content-Type": "application/json"}), body)


# -- vectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("inputs", "base", "expected"), VECTORS)
def test_official_base_strings_and_signs(inputs, base, expected):
    assert base_string(*inputs) == base
    assert sign(KEY, base) == expected


def test_shop_call_reproduces_the_shop_vector():
    signed = shopee().apply_auth("14701711", get("/api/v2/shop/get_shop_info"), token(), TS + 0.9)
    assert signed.query == (
        f"partner_id=2001887&timestamp={TS}&access_token={SHOP_TOKEN}&shop_id=14701711&sign={VECTORS[0][2]}"
    )


def test_merchant_call_reproduces_the_merchant_vector():
    request = get("/api/v2/global_product/get_category", "language=en")
    signed = shopee().apply_auth("merchant:1000000", request, token(MERCHANT_TOKEN), TS)
    query = query_of(signed)
    assert signed.query.startswith("language=en&")
    assert query["merchant_id"] == ["1000000"] and "shop_id" not in query
    assert query["sign"] == [VECTORS[1][2]]


def test_public_call_reproduces_the_public_vector_without_token():
    signed = shopee().apply_auth("14701711", get("/api/v2/public/get_shops_by_partner"), token(), TS)
    assert query_of(signed) == {"partner_id": ["2001887"], "timestamp": [str(TS)], "sign": [VECTORS[2][2]]}


def test_refresh_request_reproduces_the_refresh_vector():
    request = shopee(1000016).token_request("14701711", token(), 1657868745)
    assert request is not None and request.method == "POST"
    url = urlsplit(request.url)
    assert f"{url.scheme}://{url.netloc}{url.path}" == (
        "https://partner.shopeemobile.com/api/v2/auth/access_token/get"
    )
    assert parse_qs(url.query) == {
        "partner_id": ["1000016"],
        "timestamp": ["1657868745"],
        "sign": [VECTORS[3][2]],
    }
    assert json.loads(request.body or b"") == {
        "refresh_token": "rt-old",
        "partner_id": 1000016,
        "shop_id": 14701711,
    }
    assert request.headers["Content-Type"] == "application/json"


# -- hosts, prefixes, shops -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("global", "https://partner.shopeemobile.com"),
        ("china", "https://openplatform.shopee.cn"),
        ("brazil", "https://openplatform.shopee.com.br"),
        ("sandbox", "https://openplatform.sandbox.test-stable.shopee.sg"),
        ("sandbox_china", "https://openplatform.sandbox.test-stable.shopee.cn"),
    ],
)
def test_region_picks_the_host(region, host):
    platform = shopee(region=region)
    assert platform.base_url == host
    request = platform.token_request("1", token(), NOW)
    assert request is not None and request.url.startswith(host + "/api/v2/auth/access_token/get?")


def test_base_url_and_auth_url_override_and_their_path_prefix_is_signed():
    platform = shopee(base_url="https://gw.example/shopee/", auth_url="https://auth.example/sp")
    signed = platform.apply_auth("14701711", get("/api/v2/shop/get_shop_info"), token(), TS)
    base = base_string(2001887, "/shopee/api/v2/shop/get_shop_info", TS, SHOP_TOKEN, "14701711")
    assert query_of(signed)["sign"] == [sign(KEY, base)]
    request = platform.token_request("14701711", token(), TS)
    assert request is not None
    assert request.url.startswith("https://auth.example/sp/api/v2/auth/access_token/get?")
    expected = sign(KEY, base_string(2001887, "/sp/api/v2/auth/access_token/get", TS))
    assert parse_qs(urlsplit(request.url).query)["sign"] == [expected]


@pytest.mark.parametrize(
    "shop", ["abc", "0123", "12a", "merchant:", "merchant:x", "shop:1", "-1", "", "123\n"]
)
def test_other_shop_segments_are_unknown_shops(shop):
    platform = shopee()
    with pytest.raises(UnknownShop, match="shop_id"):
        platform.apply_auth(shop, get("/api/v2/shop/get_shop_info"), token(), NOW)
    with pytest.raises(UnknownShop):
        platform.token_request(shop, token(), NOW)
    with pytest.raises(UnknownShop):
        platform.code_request(shop, "code", None, NOW)


def test_main_account_segment_is_only_for_codes():
    platform = shopee()
    with pytest.raises(UnknownShop, match="main account"):
        platform.apply_auth("main:42", get("/api/v2/shop/get_shop_info"), token(), NOW)
    with pytest.raises(UnknownShop, match="main account"):
        platform.token_request("main:42", token(), NOW)
    with pytest.raises(UnknownShop):
        platform.code_request("merchant:7", "code", None, NOW)


def test_merchant_refresh_body_names_the_merchant():
    request = shopee().token_request("merchant:1000000", token(), NOW)
    assert request is not None
    assert json.loads(request.body or b"") == {
        "refresh_token": "rt-old",
        "partner_id": 2001887,
        "merchant_id": 1000000,
    }


def test_refresh_needs_a_stored_or_configured_refresh_token():
    assert shopee().token_request("5", None, NOW) is None
    assert shopee().token_request("5", token(refresh=None), NOW) is None
    platform = shopee(shops={"5": {"refresh_token": "rt-seed"}})
    assert platform.is_configured("5") and not platform.is_configured("6")
    seeded = platform.token_request("5", None, NOW)
    assert seeded is not None and json.loads(seeded.body or b"")["refresh_token"] == "rt-seed"
    stored = platform.token_request("5", token(refresh="rt-rotated"), NOW)
    assert stored is not None and json.loads(stored.body or b"")["refresh_token"] == "rt-rotated"


def test_configured_shop_names_are_checked():
    with pytest.raises(ValueError, match="shop_id or merchant"):
        shopee(shops={"my-shop": {}})


def test_partner_key_stays_out_of_repr():
    platform = shopee()
    assert KEY not in repr(platform) and KEY not in repr(platform.settings)


# -- token answers ---------------------------------------------------------------------------------


def test_refresh_answer_is_a_rotated_pair():
    answer = {
        "partner_id": 2001887,
        "refresh_token": "rt-new",
        "access_token": "at-new",
        "expire_in": 14400,
        "request_id": "r",
        "error": "",
        "message": "",
        "shop_id": 14701711,
    }
    new = shopee().parse_token("14701711", reply(answer), token(), NOW)
    assert (new.access_token, new.refresh_token) == ("at-new", "rt-new")
    assert new.expires_at == NOW + 14400 and new.obtained_at == NOW
    assert new.refresh_expires_at == NOW + 30 * 86400


def test_a_new_pair_is_kept_even_without_expire_in():
    new = shopee().parse_token("1", reply({"access_token": "a", "refresh_token": "r"}), None, NOW)
    assert new.refresh_token == "r" and new.expires_at == NOW + 4 * 3600


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("error_param", "Invalid refresh_token."),
        ("invalid_refresh_token", "Invalid refresh_token."),
        ("error_auth", "invalid refresh_token"),
        ("refresh_token_expired", "anything"),
        ("error_param", "Your refresh_token expired."),
    ],
)
def test_refused_refresh_tokens_are_rejections(error, message):
    answer = reply({"error": error, "message": message, "request_id": "r"}, status=403)
    with pytest.raises(RefreshRejected) as caught:
        shopee().parse_token("1", answer, token(refresh="rt-secret-value"), NOW)
    assert "rt-secret-value" not in str(caught.value)


@pytest.mark.parametrize(
    "answer",
    [
        reply({"error": "error_sign", "message": "Wrong sign."}, status=403),
        reply({"error": "error_param", "message": "Invalid timestamp."}, status=400),
        reply({"error": "error_server", "message": "busy"}, status=200),
        reply({"request_id": "r", "error": "", "message": ""}),
        reply(b"<html>Bad gateway</html>", status=502),
        reply(b"not json", status=200),
        reply([1, 2], status=200),
        reply({"access_token": "a", "refresh_token": "r"}, status=503),
    ],
)
def test_other_refresh_failures_may_work_later(answer):
    with pytest.raises(RefreshError):
        shopee().parse_token("1", answer, token(), NOW)


# -- classification ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 401, 403, 500])
@pytest.mark.parametrize("error", ["invalid_acceess_token", "invalid_access_token"])
def test_invalid_token_is_read_from_the_body_at_any_status(status, error):
    answer = reply({"request_id": "r", "error": error, "message": "Invalid access_token."}, status)
    assert shopee().classify(answer) is Verdict.TOKEN_INVALID


@pytest.mark.parametrize(
    "body",
    [
        {"error": "error_sign", "message": "Wrong sign."},
        {"error": "error_param", "message": "Invalid timestamp."},
        {"error": "error_permission", "message": "No permission."},
        {"error": "error_auth", "message": "Invalid access_token."},
        {"error": "", "response": {"error": "invalid_acceess_token"}},
        ["invalid_acceess_token"],
    ],
)
def test_other_errors_pass_through(body):
    assert shopee().classify(reply(body, 403)) is Verdict.OK


def test_non_json_and_compressed_bodies():
    platform = shopee()
    assert platform.classify(reply(b"\x89PNG", 403, {"Content-Type": "image/png"})) is Verdict.OK
    packed = gzip.compress(json.dumps({"error": "invalid_acceess_token"}).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}
    assert platform.classify(reply(packed, 403, headers)) is Verdict.TOKEN_INVALID
    assert platform.classify(reply(b"\x1f\x8bbroken", 403, headers)) is Verdict.OK


@pytest.mark.parametrize(
    ("status", "headers", "inspect"),
    [
        (200, {"Content-Type": "application/json"}, True),
        (403, {"content-type": "application/json; charset=utf-8", "Content-Length": "120"}, True),
        (200, {"Content-Type": "application/problem+json"}, True),
        (200, {"Content-Type": "text/plain"}, True),
        (200, {}, True),
        (200, {"Content-Type": "application/json", "Content-Length": str(64 * 1024 + 1)}, False),
        (200, {"Content-Type": "image/jpeg"}, False),
        (200, {"Content-Type": "application/octet-stream"}, False),
    ],
)
def test_small_json_replies_of_any_status_are_inspected(status, headers, inspect):
    assert shopee().should_inspect(status, CIMultiDict(headers)) is inspect


# -- seller authorization ---------------------------------------------------------------------------


def test_authorize_url_is_publicly_signed_and_carries_state_in_the_redirect():
    url = urlsplit(shopee().authorize_url("https://app.example/cb?x=1", "st8", TS))
    assert (
        f"{url.scheme}://{url.netloc}{url.path}"
        == "https://partner.shopeemobile.com/api/v2/shop/auth_partner"
    )
    query = parse_qs(url.query)
    assert query["partner_id"] == ["2001887"] and query["timestamp"] == [str(TS)]
    assert query["sign"] == [sign(KEY, f"2001887/api/v2/shop/auth_partner{TS}")]
    assert query["redirect"] == ["https://app.example/cb?x=1&state=st8"]


def test_authorize_url_needs_a_redirect():
    with pytest.raises(ConfigError, match="redirect"):
        shopee().authorize_url(None, "", NOW)
    url = shopee(redirect_url="https://app.example/cb").authorize_url(None, "", NOW)
    assert parse_qs(urlsplit(url).query)["redirect"] == ["https://app.example/cb"]


@pytest.mark.parametrize(
    ("shop", "field", "value"), [("14701711", "shop_id", 14701711), ("main:9", "main_account_id", 9)]
)
def test_code_request_body(shop, field, value):
    request = shopee().code_request(shop, "c0de", None, TS)
    assert request.url.split("?")[0] == "https://partner.shopeemobile.com/api/v2/auth/token/get"
    assert parse_qs(urlsplit(request.url).query)["sign"] == [sign(KEY, f"2001887/api/v2/auth/token/get{TS}")]
    assert json.loads(request.body or b"") == {"code": "c0de", "partner_id": 2001887, field: value}


def test_main_account_code_gives_the_same_pair_to_every_shop_and_merchant():
    answer = {"access_token": "a", "refresh_token": "r", "expire_in": 14400, "error": "", "message": "",
              "shop_id_list": [11, 12], "merchant_id_list": [7]}  # fmt: skip
    tokens = shopee().parse_code_reply("main:9", reply(answer), NOW)
    assert set(tokens) == {"11", "12", "merchant:7"}
    assert {(t.access_token, t.refresh_token) for t in tokens.values()} == {("a", "r")}


def test_shop_code_reply_and_refusal():
    answer = {"access_token": "a", "refresh_token": "r", "expire_in": 100, "error": "", "message": ""}
    assert set(shopee().parse_code_reply("5", reply(answer), NOW)) == {"5"}
    with pytest.raises(RefreshRejected, match="Invalid code"):
        shopee().parse_code_reply("5", reply({"error": "error_param", "message": "Invalid code"}, 403), NOW)
    with pytest.raises(RefreshError, match="no shop"):
        shopee().parse_code_reply("main:1", reply(answer), NOW)
