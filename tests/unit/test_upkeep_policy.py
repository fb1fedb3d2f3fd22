"""Keep-alive's policy (pure): when an idle shop is refreshed, when it is next looked at,
and when (and why) its access ends."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from authproxy.models import HttpReply, Token, TokenRecord, TokenStatus
from authproxy.platforms import build_platform
from authproxy.settings import OAuth2App, ShopeeApp, TikTokApp
from authproxy.tokens.policy import (
    SPREAD,
    Ending,
    Upkeep,
    access_ends,
    idle_refresh_at,
    next_check,
    spread,
)

NOW = 1_800_000_000.0
DAY = 86400.0
SHOPEE = Upkeep(idle_lifetime=30 * DAY, fraction=0.25)
TIKTOK = Upkeep(idle_lifetime=0.0)


def record(issued: float = NOW, *, refresh: str | None = "rt", **fields: object) -> TokenRecord:
    token = Token("at", issued + 4 * 3600, issued, refresh, issued + 30 * DAY)
    return dataclasses.replace(TokenRecord(token=token, last_refresh=issued), **fields)  # type: ignore[arg-type]


@given(st.text(min_size=1, max_size=20), st.floats(min_value=1e9, max_value=3e9))
def test_the_spread_is_in_range_and_the_same_wherever_it_is_computed(shop, issued):
    factor = spread(shop, issued)
    assert SPREAD[0] <= factor <= SPREAD[1]
    assert spread(shop, issued) == factor


def test_shops_spread_out_over_the_range():
    factors = [spread(str(n), NOW) for n in range(1000)]
    assert min(factors) < 0.82 and max(factors) > 0.98
    assert 0.88 < sum(factors) / len(factors) < 0.92


def test_an_idle_pair_is_refreshed_after_a_spread_fraction_of_its_idle_lifetime():
    due = idle_refresh_at("1", record(), SHOPEE)
    assert due is not None
    assert NOW + 0.8 * 7.5 * DAY <= due <= NOW + 7.5 * DAY
    assert due == NOW + 7.5 * DAY * spread("1", NOW)


def test_nothing_to_keep_alive():
    assert idle_refresh_at("1", record(), TIKTOK) is None  # no idle expiry
    assert idle_refresh_at("1", record(status=TokenStatus.NEEDS_REAUTHORIZATION), SHOPEE) is None
    assert idle_refresh_at("1", record(refresh=None), SHOPEE) is None
    assert idle_refresh_at("1", None, SHOPEE) is None


def test_a_configured_seed_with_nothing_stored_is_used_at_once_after_any_backoff():
    assert idle_refresh_at("1", None, SHOPEE, seeded=True) == 0.0
    failed = TokenRecord(token=None, failures=2, retry_at=NOW + 30)
    assert idle_refresh_at("1", failed, SHOPEE, seeded=True) == NOW + 30


def test_a_failed_refresh_is_not_tried_again_before_its_backoff_ends():
    failing = record(NOW - 10 * DAY, failures=3, retry_at=NOW + 8)
    assert idle_refresh_at("1", failing, SHOPEE) == NOW + 8


def test_the_next_check_is_the_idle_refresh_or_the_next_warning_whichever_first():
    ends = NOW + 40 * DAY
    refresh = idle_refresh_at("1", record(), SHOPEE)
    assert next_check("1", record(), NOW, SHOPEE, None) == refresh
    assert next_check("1", record(), NOW, SHOPEE, ends) == refresh  # 7.5 days < 10 days
    assert next_check("1", record(), NOW, TIKTOK, ends) == ends - 30 * DAY
    assert next_check("1", record(), ends - 30 * DAY, TIKTOK, ends) == ends - 7 * DAY
    assert next_check("1", record(), ends - 3600, TIKTOK, ends) is None  # no warning left
    marked = record(status=TokenStatus.NEEDS_REAUTHORIZATION)
    assert next_check("1", marked, NOW, SHOPEE, ends) is None  # a person must act: out of the index


def test_access_ends_with_the_first_of_its_endings_and_says_why():
    assert access_ends(record(), NOW, SHOPEE, None) == (NOW + 30 * DAY, Ending.REFRESH_IDLE_EXPIRY)
    assert access_ends(record(), NOW, SHOPEE, NOW + DAY) == (NOW + DAY, Ending.AUTHORIZATION_ENDS)
    assert access_ends(record(), NOW, TIKTOK, NOW + DAY) == (NOW + DAY, Ending.AUTHORIZATION_ENDS)
    assert access_ends(record(), NOW, TIKTOK, None) is None  # it lasts until someone revokes it
    marked = record(status=TokenStatus.NEEDS_REAUTHORIZATION)
    assert access_ends(marked, NOW, TIKTOK, None) == (NOW, Ending.NEEDS_REAUTHORIZATION)


def oauth2(**extra: object) -> OAuth2App:
    fields: dict[str, object] = {"base_url": "https://x", "token_url": "https://x/t", "client_id": "c"}
    return OAuth2App(platform="oauth2", grant_type="refresh_token", **fields, **extra)  # type: ignore[arg-type]


def test_each_platform_states_its_idle_lifetime_and_an_app_may_override_it():
    shopee = ShopeeApp(platform="shopee", partner_id=1, partner_key="k")
    assert build_platform(shopee).idle_lifetime == 30 * DAY
    assert build_platform(shopee.model_copy(update={"refresh_idle_lifetime": 60})).idle_lifetime == 60
    assert build_platform(TikTokApp(platform="tiktok", app_key="k", app_secret="s")).idle_lifetime == 0
    assert build_platform(oauth2()).idle_lifetime == 0


def test_an_oauth2_refresh_token_that_dies_unused_gets_its_expiry_from_each_answer():
    answer = json.dumps({"access_token": "a", "expires_in": 3600, "refresh_token": "r2"}).encode()
    reply = HttpReply.received(200, CIMultiDict({"Content-Type": "application/json"}), answer)
    dying = build_platform(oauth2(refresh_idle_lifetime=90 * DAY)).parse_token("acme", reply, None, NOW)
    assert dying.refresh_expires_at == NOW + 90 * DAY
    assert build_platform(oauth2()).parse_token("acme", reply, None, NOW).refresh_expires_at is None
