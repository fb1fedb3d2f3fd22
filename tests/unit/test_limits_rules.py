"""The pure parts of rate limiting: parsing replies, matching operations, the decisions."""

from __future__ import annotations

import math
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authproxy.limits.rules import (
    Bucket,
    buckets_for,
    capacity_burst,
    headroom,
    lesson,
    max_wait,
    retry_after,
    rule_of,
    should_retry,
)
from authproxy.models import HttpReply, Operation, Quota, Scope, Throttle
from authproxy.platforms.amazon_limits import UsagePlans, unknown_template
from authproxy.platforms.shopee import Shopee
from authproxy.platforms.shoptet import Shoptet
from authproxy.platforms.throttling import parse_filling, parse_rate, parse_retry_after
from authproxy.platforms.tiktok import TikTok, api_of
from authproxy.settings import LimitSettings, ShopeeApp, ShoptetApp, TikTokApp
from authproxy.store.gcra import Grant

# -- reading replies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", (120.0, None)),
        (" 1.5 ", (1.5, None)),
        ("999999", (3600.0, None)),  # a hostile or mistyped wait is capped
        ("Sun, 06 Nov 1994 08:49:37 GMT", (None, 784111777.0)),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", (None, 784111777.0)),  # RFC 850
        ("Sun Nov  6 08:49:37 1994", (None, 784111777.0)),  # asctime
        ("soon", (None, None)),
        ("-5", (None, None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value, expected):
    assert parse_retry_after(value) == expected


@given(st.integers(0, 4_000_000_000))
def test_an_http_date_comes_back_as_its_moment(moment):
    assert parse_retry_after(formatdate(moment, usegmt=True)) == (None, float(moment))


@given(st.integers(0, 10**6))
def test_delay_seconds_come_back_capped_at_an_hour(seconds):
    assert parse_retry_after(str(seconds)) == (min(float(seconds), 3600.0), None)


def test_announced_rates_and_fillings():
    assert parse_rate("2.0") == 2.0 and parse_rate("0.0167") == 0.0167
    assert parse_rate("0") is None and parse_rate("inf") is None and parse_rate("x") is None
    assert parse_filling("150/200") == (150, 200) and parse_filling(" 0 / 200 ") == (0, 200)
    assert parse_filling("1/0") is None and parse_filling("full") is None and parse_filling(None) is None


def _reply(status: int, body: bytes = b"", **headers: str) -> HttpReply:
    return HttpReply(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


def test_tiktok_counts_per_api_and_reads_36009002_whatever_the_status():
    tiktok = TikTok(TikTokApp(platform="tiktok", app_key="k", app_secret="s"))
    assert (
        api_of("get", "/product/202309/products/1729592969712207008") == "GET /product/202309/products/{id}"
    )
    assert tiktok.operation("POST", "/order/202309/orders/search").quotas == (Quota(50.0, 10),)
    throttled = b'{"code":36009002,"message":"Too many requests","request_id":"x"}'
    assert tiktok.throttle(_reply(429, throttled)).throttled
    assert tiktok.throttle(_reply(200, throttled)).throttled
    assert not tiktok.throttle(_reply(200, b'{"code":0,"data":{"id":"36009002"}}')).throttled


def test_amazon_operations_come_from_the_usage_plans():
    plans = UsagePlans()
    assert plans.operation("GET", "/orders/v0/orders").quotas == (Quota(0.0167, 20),)
    product_type = plans.operation("get", "/definitions/2020-09-01/productTypes/LUGGAGE")
    assert product_type.name == "getDefinitionsProductType"
    assert product_type.quotas == (Quota(5.0, 5), Quota(100.0, 5, Scope.APP))
    unknown = plans.operation("GET", "/foo/2021-06-30/bars/123-45")
    assert (unknown.name, unknown.label, unknown.quotas) == ("GET /foo/2021-06-30/bars/{}", "other", ())
    assert (
        unknown_template("/listings/2021-08-01/items/A1B2/MY-SKU") == "/listings/2021-08-01/items/{}/MY-SKU"
    )


def test_shoptet_filling_on_every_reply_and_423_is_no_throttle():
    shoptet = Shoptet(ShoptetApp(platform="shoptet", auth_url="https://1.myshoptet.com"))
    date = "Sun, 06 Nov 1994 08:49:37 GMT"
    full = shoptet.throttle(_reply(429, X_RateLimit_Bucket_Filling="200/200", Retry_After=date))
    assert full == Throttle(throttled=True, retry_at=784111777.0, filling=(200, 200))
    assert shoptet.throttle(_reply(200, X_RateLimit_Bucket_Filling="12/200")) == Throttle(filling=(12, 200))
    assert not shoptet.throttle(_reply(423)).throttled


def test_shopee_error_rate_limit_or_too_many_in_any_status():
    shopee = Shopee(ShopeeApp(platform="shopee", partner_id=1, partner_key="k"))
    assert shopee.throttle(_reply(200, b'{"error":"error_rate_limit","message":""}')).throttled
    assert shopee.throttle(_reply(403, b'{"error":"error_busy","message":"Too many requests"}')).throttled
    assert not shopee.throttle(_reply(200, b'{"error":"","message":"","response":{}}')).throttled
    assert shopee.throttle_penalty == 60.0


# -- matching operations --------------------------------------------------------------------------


def test_a_config_rule_wins_per_scope_over_the_platform():
    operation = Operation("getOrder", "getOrder", (Quota(0.5, 30), Quota(100.0, 5, Scope.APP)))
    rules = [
        rule_of(LimitSettings(match="POST /orders/*", rate=9.0)),  # another method
        rule_of(LimitSettings(match="GET /orders/v0/orders/*", rate=2.0, burst=4)),
    ]
    shop, app = buckets_for(operation, "get", "/orders/v0/orders/1", rules)
    assert shop == Bucket(Scope.SHOP, "GET /orders/v0/orders/*", "GET /orders/v0/orders/*", 2.0, 3)
    assert app == Bucket(Scope.APP, "getOrder", "getOrder", 100.0, 4)


def test_an_app_wide_rule_adds_to_the_platforms_shop_limit():
    rules = [rule_of(LimitSettings(match="*", rate=20.0, scope="app"))]
    shop, app = buckets_for(Operation("op", "op", (Quota(5.0, 10),)), "GET", "/x", rules)
    assert (shop.scope, shop.rate, app.scope, app.rate, app.burst) == (Scope.SHOP, 5.0, Scope.APP, 20.0, 19)


def test_a_call_without_any_limit_still_has_a_shop_bucket_for_penalties():
    (bucket,) = buckets_for(Operation("*", "*"), "GET", "/x", [])
    assert bucket == Bucket(Scope.SHOP, "*", "*", 0.0, 1)


def test_headroom_keeps_one_call_of_the_burst_or_a_tenth_of_the_rate():
    assert headroom(Quota(0.0167, 20)) == (0.0167, 19)
    assert headroom(Quota(0.5, 1)) == (pytest.approx(0.45), 1)
    assert capacity_burst(200) == 180 and capacity_burst(20) == 18 and capacity_burst(1) == 1


@pytest.mark.parametrize("bad", ["GET", "get /x", "/x /y", "GET  ", "x"])
def test_a_limit_match_is_checked_at_start_up(bad):
    with pytest.raises(ValueError, match="match must be"):
        LimitSettings(match=bad, rate=1.0)


def test_a_missing_burst_is_one_seconds_worth():
    assert rule_of(LimitSettings(match="*", rate=0.2)).quota.burst == 1
    assert rule_of(LimitSettings(match="*", rate=12.5)).quota.burst == 13


# -- decisions ---------------------------------------------------------------------------------------


def test_max_wait_is_the_servers_or_less():
    assert max_wait(None, 10.0) == 10.0
    assert max_wait("1", 10.0) == 1.0 and max_wait("0", 10.0) == 0.0 and max_wait("60", 10.0) == 10.0
    for bad in ("soon", "-1", "nan", "inf"):
        with pytest.raises(ValueError):
            max_wait(bad, 10.0)


@given(st.floats(0, 10_000))
def test_retry_after_is_whole_seconds_never_zero_never_short(wait):
    seconds = retry_after(wait)
    assert seconds >= 1 and seconds >= math.floor(wait) and seconds - wait < 1 + 1e-3


def _grant(rate: float = 2.0, burst: int = 5, level: float = 1.0) -> Grant:
    return Grant(True, 0.0, 0, level, rate, burst)


SHOP = Bucket(Scope.SHOP, "getOrder", "getOrder", 2.0, 5)


def test_a_throttled_reply_without_a_wait_rests_the_bucket_a_penalty_or_an_interval():
    assert lesson(Throttle(throttled=True), SHOP, _grant(rate=0.1), 1.0).penalty_in == 10.0
    assert lesson(Throttle(throttled=True), SHOP, _grant(rate=4.0), 1.0).penalty_in == 1.0
    dated = lesson(Throttle(throttled=True, retry_at=1_800_000_000.0), SHOP, None, 1.0)
    assert (dated.penalty_at, dated.penalty_in) == (1_800_000_000.0, None)


def test_an_announced_rate_is_learned_only_when_new():
    assert not lesson(Throttle(rate=2.0), SHOP, _grant(rate=2.0), 1.0), "the bucket's own rate"
    assert not lesson(Throttle(rate=1.0), SHOP, _grant(rate=0.95), 1.0), "already learned"
    assert lesson(Throttle(rate=1.0), SHOP, _grant(rate=2.0), 1.0).rate == pytest.approx(0.95)
    app = Bucket(Scope.APP, "getOrder", "getOrder", 100.0, 5)
    assert not lesson(Throttle(rate=1.0), app, _grant(), 1.0), "it covers the seller's limit only"


def test_a_fuller_platform_bucket_than_counted_is_taught():
    taught = lesson(Throttle(filling=(150, 200)), SHOP, _grant(burst=180, level=20.0), 1.0)
    assert (taught.used, taught.burst) == (150, None)
    assert not lesson(Throttle(filling=(25, 200)), SHOP, _grant(burst=180, level=20.0), 1.0)
    assert lesson(Throttle(filling=(0, 20)), SHOP, _grant(burst=180), 1.0).burst == 18


@pytest.mark.parametrize(
    ("throttled", "wait", "replayable", "retried", "expected"),
    [
        (True, 1.0, True, False, True),
        (True, 10.0, True, False, True),
        (True, 10.5, True, False, False),  # longer than the request may wait
        (True, 1.0, False, False, False),  # a streamed body cannot be sent again
        (True, 1.0, True, True, False),  # once only
        (False, 0.0, True, False, False),
    ],
)
def test_one_retry_of_a_gate_refusal(throttled, wait, replayable, retried, expected):
    throttle = Throttle(throttled=throttled)
    assert should_retry(throttle, wait=wait, budget=10.0, replayable=replayable, retried=retried) is expected
