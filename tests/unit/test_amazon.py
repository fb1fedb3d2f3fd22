"""The pure Amazon SP-API module: LWA requests, call headers, reply classification."""

from __future__ import annotations

import calendar
import json
import time
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from authproxy.errors import ConfigError, RefreshError, RefreshRejected
from authproxy.models import HttpReply, OutgoingRequest, Token, Verdict
from authproxy.platforms import build_platform
from authproxy.platforms.amazon import Amazon, amz_date, token_rejected
from authproxy.settings import AmazonApp

NOW = 1_700_000_000.0
SEED = "Atzr|IwEBconfigured"


def app(**overrides: Any) -> Amazon:
    settings: dict[str, Any] = {
        "platform": "amazon",
        "client_id": "amzn1.application-oa2-client.abc",
        "client_secret": "lwa-secret-123456",
        "shops": {"acme": {"refresh_token": SEED}, "bare": {}},
    }
    settings.update(overrides)
    return Amazon(AmazonApp(**settings))


def form_of(request: Any) -> dict[str, str]:
    return dict(parse_qsl(request.body.decode(), strict_parsing=True))


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> HttpReply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpReply.received(status, CIMultiDict(headers or {"Content-Type": "application/json"}), raw)


def denied(details: str | None, *, code: str = "Unauthorized") -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": "Access to requested resource is denied."}
    if details is not None:
        error["details"] = details
    return {"errors": [error]}


def stored(refresh: str | None = "Atzr|IwEBstored") -> Token:
    return Token(access_token="Atza|old", expires_at=NOW, obtained_at=NOW - 3600, refresh_token=refresh)


# -- endpoints -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "sandbox", "url"),
    [
        ("na", False, "https://sellingpartnerapi-na.amazon.com"),
        ("eu", False, "https://sellingpartnerapi-eu.amazon.com"),
        ("fe", False, "https://sellingpartnerapi-fe.amazon.com"),
        ("na", True, "https://sandbox.sellingpartnerapi-na.amazon.com"),
        ("eu", True, "https://sandbox.sellingpartnerapi-eu.amazon.com"),
        ("fe", True, "https://sandbox.sellingpartnerapi-fe.amazon.com"),
    ],
)
def test_base_url_by_region(region: str, sandbox: bool, url: str) -> None:
    assert app(region=region, sandbox=sandbox).base_url == url


def test_base_url_and_auth_url_overrides() -> None:
    platform = app(base_url="http://127.0.0.1:9/", auth_url="http://127.0.0.1:8/")
    assert platform.base_url == "http://127.0.0.1:9"
    assert platform.token_url == "http://127.0.0.1:8/auth/o2/token"
    assert app().token_url == "https://api.amazon.com/auth/o2/token"


def test_registry_builds_amazon() -> None:
    platform = build_platform(AmazonApp(platform="amazon", client_id="c", client_secret="s"))
    assert isinstance(platform, Amazon)


# -- LWA requests -----------------------------------------------------------------------------


def test_refresh_request_shape() -> None:
    request = app().token_request("acme", None, NOW)
    assert request is not None
    assert (request.method, request.url) == ("POST", "https://api.amazon.com/auth/o2/token")
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded;charset=UTF-8"
    assert form_of(request) == {
        "grant_type": "refresh_token",
        "refresh_token": SEED,
        "client_id": "amzn1.application-oa2-client.abc",
        "client_secret": "lwa-secret-123456",
    }
    assert b"Atzr%7CIwEBconfigured" in (request.body or b"")  # form-encoded, not raw


def test_configured_refresh_token_wins_over_stored() -> None:
    request = app().token_request("acme", stored(), NOW)
    assert request is not None and form_of(request)["refresh_token"] == SEED


def test_stored_refresh_token_used_without_config() -> None:
    for shop in ("bare", "authorized-later"):
        request = app().token_request(shop, stored(), NOW)
        assert request is not None and form_of(request)["refresh_token"] == "Atzr|IwEBstored"


def test_no_refresh_token_no_request() -> None:
    assert app().token_request("bare", None, NOW) is None
    assert app().token_request("nobody", stored(None), NOW) is None
    assert not app().is_configured("nobody")
    assert app().is_configured("bare")


@pytest.mark.parametrize(
    ("shop", "scope"),
    [
        ("grantless:notifications", "sellingpartnerapi::notifications"),
        ("grantless:migration", "sellingpartnerapi::migration"),
        ("grantless:rotation", "sellingpartnerapi::client_credential:rotation"),
    ],
)
def test_grantless_request(shop: str, scope: str) -> None:
    platform = app(shops={})
    request = platform.token_request(shop, stored(), NOW)
    assert request is not None and platform.is_configured(shop)
    assert form_of(request) == {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_id": "amzn1.application-oa2-client.abc",
        "client_secret": "lwa-secret-123456",
    }


def test_unknown_grantless_name_is_an_ordinary_unknown_shop() -> None:
    platform = app()
    assert platform.token_request("grantless:reports", None, NOW) is None
    assert not platform.is_configured("grantless:reports")


# -- LWA answers ------------------------------------------------------------------------------

ANSWER = {"access_token": "Atza|new", "token_type": "bearer", "expires_in": 3600, "refresh_token": SEED}


def test_parse_token_of_configured_shop_keeps_no_refresh_copy() -> None:
    token = app().parse_token("acme", reply(200, ANSWER), None, NOW)
    assert (token.access_token, token.expires_at, token.obtained_at) == ("Atza|new", NOW + 3600, NOW)
    assert token.refresh_token is None


def test_parse_token_of_stored_shop_keeps_refresh_token() -> None:
    answer = {**ANSWER, "refresh_token": "Atzr|IwEBstored"}
    assert app().parse_token("bare", reply(200, answer), stored(), NOW).refresh_token == "Atzr|IwEBstored"
    without = {k: v for k, v in ANSWER.items() if k != "refresh_token"}
    assert app().parse_token("bare", reply(200, without), stored(), NOW).refresh_token == "Atzr|IwEBstored"


def test_parse_grantless_token() -> None:
    answer = {"access_token": "Atza|g", "scope": "sellingpartnerapi::notifications", "expires_in": 3600}
    token = app().parse_token("grantless:notifications", reply(200, answer), None, NOW)
    assert token.access_token == "Atza|g" and token.refresh_token is None


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client", "unauthorized_client"])
def test_lwa_refusals_are_rejections(error: str) -> None:
    body = {"error_description": "The request has an invalid grant parameter : refresh_token", "error": error}
    with pytest.raises(RefreshRejected) as caught:
        app().parse_token("acme", reply(400 if error != "invalid_client" else 401, body), None, NOW)
    assert SEED not in str(caught.value) and "lwa-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"error": "invalid_request", "error_description": "bad"}),
        (400, {"error": "invalid_scope", "error_description": "bad"}),
        (500, {"error": "server_error"}),
        (503, b"<html>down</html>"),
        (200, b"not json"),
        (429, {"error": "slow_down"}),
    ],
)
def test_other_lwa_failures_may_work_later(status: int, body: Any) -> None:
    with pytest.raises(RefreshError):
        app().parse_token("acme", reply(status, body), None, NOW)


# -- seller authorization ---------------------------------------------------------------------


def test_consent_url() -> None:
    platform = app(application_id="amzn1.sp.solution.1234")
    url = platform.authorize_url(None, "st&ate=1", NOW)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == (
        "https://sellercentral.amazon.com/apps/authorize/consent"
    )
    assert parse_qs(parts.query) == {"application_id": ["amzn1.sp.solution.1234"], "state": ["st&ate=1"]}


def test_consent_url_draft_region_and_redirect() -> None:
    eu = app(application_id="amzn1.sp.solution.1", region="eu", draft=True)
    url = eu.authorize_url("https://example.com/cb", "s", NOW)
    assert url.startswith("https://sellercentral-europe.amazon.com/apps/authorize/consent?")
    assert parse_qs(urlsplit(url).query) == {
        "application_id": ["amzn1.sp.solution.1"],
        "state": ["s"],
        "redirect_uri": ["https://example.com/cb"],
        "version": ["beta"],
    }
    au = app(application_id="a", region="fe", seller_central_url="https://sellercentral.amazon.com.au/")
    assert au.authorize_url(None, "s", NOW).startswith("https://sellercentral.amazon.com.au/apps/")


def test_consent_url_needs_application_id() -> None:
    with pytest.raises(ConfigError):
        app().authorize_url(None, "s", NOW)


def test_code_exchange() -> None:
    request = app().code_request("new-seller", "ANDcode", "https://example.com/cb", NOW)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded;charset=UTF-8"
    assert form_of(request) == {
        "grant_type": "authorization_code",
        "code": "ANDcode",
        "redirect_uri": "https://example.com/cb",
        "client_id": "amzn1.application-oa2-client.abc",
        "client_secret": "lwa-secret-123456",
    }
    assert "redirect_uri" not in form_of(app().code_request("s", "c", None, NOW))
    tokens = app().parse_code_reply("new-seller", reply(200, {**ANSWER, "refresh_token": "Atzr|x"}), NOW)
    assert tokens["new-seller"].refresh_token == "Atzr|x"
    with pytest.raises(RefreshError):
        app().parse_code_reply("s", reply(200, {"access_token": "a", "expires_in": 3600}), NOW)


def test_a_public_apps_authorisation_ends_a_year_after_the_code_exchange_unless_told_otherwise() -> None:
    answer = reply(200, {**ANSWER, "refresh_token": "Atzr|x"})
    public = app().parse_code_reply("seller", answer, NOW)["seller"]
    assert public.authorized_until == NOW + 365 * 86400
    assert app().authorization_ends(public) == NOW + 365 * 86400
    private = app(reauthorize_every=0).parse_code_reply("seller", answer, NOW)["seller"]
    assert private.authorized_until is None and app().authorization_ends(private) is None
    assert app().idle_lifetime == 0  # LWA refresh tokens do not die of idleness


# -- calls ------------------------------------------------------------------------------------


def outgoing(*headers: tuple[str, str]) -> OutgoingRequest:
    return OutgoingRequest("GET", "/orders/v0/orders", "MarketplaceIds=ATVPDKIKX0DER", headers)


def test_amz_date_vector() -> None:
    assert amz_date(calendar.timegm((2019, 4, 30, 12, 36, 0))) == "20190430T123600Z"


@given(st.floats(min_value=0, max_value=4_102_444_800))
def test_amz_date_round_trips(now: float) -> None:
    parsed = calendar.timegm(time.strptime(amz_date(now), "%Y%m%dT%H%M%SZ"))
    assert parsed == int(now)


def test_apply_auth_headers() -> None:
    token = Token(access_token="Atza|live", expires_at=NOW + 3600, obtained_at=NOW)
    signed = app().apply_auth("acme", outgoing(("Accept", "application/json")), token, 1556627760.0)
    assert signed.header("x-amz-access-token") == "Atza|live"
    assert signed.header("x-amz-date") == "20190430T123600Z"
    assert signed.header("user-agent") == "authproxy/0.1 (Language=Python)"
    assert signed.header("accept") == "application/json"
    assert (signed.path, signed.query) == ("/orders/v0/orders", "MarketplaceIds=ATVPDKIKX0DER")


def test_apply_auth_keeps_client_user_agent_and_replaces_token() -> None:
    token = Token(access_token="Atza|live", expires_at=None, obtained_at=NOW)
    request = outgoing(("User-Agent", "MyApp/2 (Language=Go)"), ("X-Amz-Access-Token", "stale"))
    signed = app().apply_auth("acme", request, token, NOW)
    assert signed.header("user-agent") == "MyApp/2 (Language=Go)"
    assert [v for k, v in signed.headers if k.lower() == "x-amz-access-token"] == ["Atza|live"]


def test_inbound_credentials_are_declared() -> None:
    # x-amz-access-token is judged by apply_auth (an RDT is kept, anything else replaced)
    assert app().credential_headers == {"authorization"}


# -- classification ---------------------------------------------------------------------------

EXPIRED = "The access token you provided has expired."
REVOKED = "The access token you provided is revoked, malformed or invalid."


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (403, denied(EXPIRED), Verdict.TOKEN_INVALID),
        (403, denied(REVOKED), Verdict.TOKEN_INVALID),
        (403, denied(EXPIRED.upper()), Verdict.TOKEN_INVALID),
        (403, denied("The access token you provided is malformed."), Verdict.TOKEN_INVALID),
        (
            403,
            {"errors": [{"code": "X", "message": "m", "details": ""}, denied(EXPIRED)["errors"][0]]},
            Verdict.TOKEN_INVALID,
        ),
        (403, denied(""), Verdict.OK),  # missing role: a refresh cannot help
        (403, denied(None), Verdict.OK),
        (403, denied("Access token is missing in the request header."), Verdict.OK),
        (403, denied("The security token included in the request is invalid."), Verdict.OK),
        (403, {"errors": "nope"}, Verdict.OK),
        (403, {"errors": [EXPIRED]}, Verdict.OK),
        (403, b"<html>Forbidden</html>", Verdict.OK),
        (403, [1, 2], Verdict.OK),
        (401, denied(EXPIRED), Verdict.OK),
        (
            429,
            {"errors": [{"code": "QuotaExceeded", "message": "You exceeded your quota", "details": ""}]},
            Verdict.OK,
        ),
        (400, denied(EXPIRED), Verdict.OK),
        (500, b"", Verdict.OK),
        (200, denied(EXPIRED), Verdict.OK),
    ],
)
def test_classify(status: int, body: Any, verdict: Verdict) -> None:
    assert app().classify(reply(status, body)) is verdict


def test_only_403_is_inspected() -> None:
    platform = app()
    assert platform.should_inspect(403, {})
    assert not any(platform.should_inspect(status, {}) for status in (200, 400, 401, 404, 429, 500))


@given(st.integers(min_value=100, max_value=599).filter(lambda s: s != 403), st.text())
def test_non_403_is_never_a_token_problem(status: int, details: str) -> None:
    assert app().classify(reply(status, denied(details))) is Verdict.OK


@given(st.text())
def test_token_rejected_needs_the_phrase(details: str) -> None:
    if "access token you provided" not in details.lower():
        assert not token_rejected(details)


def test_a_clients_restricted_data_token_is_kept_any_other_token_replaced() -> None:
    platform = app()
    lwa = Token(access_token="Atza|lwa", expires_at=2e9, obtained_at=1e9)

    def sent(header: str | None) -> str | None:
        headers = (("x-amz-access-token", header),) if header else ()
        request = OutgoingRequest("GET", "/orders/v0/orders/1/buyerInfo", "", headers)
        return platform.apply_auth("seller", request, lwa, 1e9).header("x-amz-access-token")

    assert sent("Atz.sprdt|restricted") == "Atz.sprdt|restricted"
    assert sent("Atza|someone-elses") == "Atza|lwa"
    assert sent(None) == "Atza|lwa"
