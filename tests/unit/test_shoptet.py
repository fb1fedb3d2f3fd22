"""Shoptet's pure module: request shapes, token answers, classification (platforms.md §2)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authproxy.errors import RefreshError, RefreshRejected
from authproxy.models import HttpReply, OutgoingRequest, Token, Verdict
from authproxy.platforms import build_platform
from authproxy.platforms.shoptet import Shoptet
from authproxy.settings import Settings

NOW = 1_700_000_000.0
EXPIRED = {"errorCode": "expired-token", "message": "Token is expired. Please ask for new one."}


def shoptet(**app: object) -> Shoptet:
    config = {"platform": "shoptet", "auth_url": "https://12345.myshoptet.com", **app}
    platform = build_platform(Settings(apps={"s": config}).apps["s"])
    assert isinstance(platform, Shoptet)
    return platform


def envelope(*errors: dict[str, str]) -> bytes:
    return json.dumps({"data": None, "errors": list(errors), "metadata": {"requestId": "r1"}}).encode()


def stored(oauth: str = "stored-oauth") -> Token:
    return Token(access_token="api-old", expires_at=NOW, obtained_at=NOW - 1800, refresh_token=oauth)


# -- getAccessToken ---------------------------------------------------------------------


def test_token_request_is_a_get_with_the_oauth_token_as_bearer():
    request = shoptet().token_request("eshop", stored("oauth-1"), NOW)
    assert request is not None
    assert request.method == "GET"
    assert request.url == "https://12345.myshoptet.com/action/ApiOAuthServer/getAccessToken"
    assert request.headers["Authorization"] == "Bearer oauth-1"
    assert request.body is None


def test_configured_oauth_token_wins_over_the_stored_one():
    platform = shoptet(shops={"eshop": {"oauth_access_token": "from-config"}})
    request = platform.token_request("eshop", stored("from-store"), NOW)
    assert request is not None and request.headers["Authorization"] == "Bearer from-config"
    assert platform.is_configured("eshop") and not platform.is_configured("other")


def test_no_oauth_token_anywhere_means_no_request():
    assert shoptet().token_request("eshop", None, NOW) is None
    assert shoptet(shops={"eshop": {}}).token_request("eshop", None, NOW) is None


@pytest.mark.parametrize(
    "auth_url",
    [
        "https://12345.myshoptet.com/",
        "https://12345.myshoptet.com/action/ApiOAuthServer/token",
        "https://12345.myshoptet.com/action/ApiOAuthServer/getAccessToken/",
    ],
)
def test_auth_url_may_be_the_eshop_or_a_full_oauth_url(auth_url):
    request = shoptet(auth_url=auth_url).token_request("eshop", stored(), NOW)
    assert request is not None
    assert request.url == "https://12345.myshoptet.com/action/ApiOAuthServer/getAccessToken"


def test_base_url_defaults_to_the_public_api():
    assert shoptet().base_url == "https://api.myshoptet.com"
    assert shoptet(base_url="http://127.0.0.1:9/").base_url == "http://127.0.0.1:9"


def test_api_token_answer_keeps_the_oauth_token():
    body = b'{"access_token":"123456-a-fltqc2nn5zg8y5h69jx8976ltwi2p1qg","expires_in":1800}'
    current = Token("old", NOW, NOW - 1800, refresh_token="oauth", extra={"eshop_id": "7"})
    token = shoptet().parse_token("eshop", HttpReply(200, {}, body), current, NOW)
    assert token.access_token == "123456-a-fltqc2nn5zg8y5h69jx8976ltwi2p1qg"
    assert token.expires_at == NOW + 1800 and token.obtained_at == NOW
    assert token.refresh_token == "oauth" and token.extra == {"eshop_id": "7"}


def test_api_token_from_a_configured_oauth_token_stores_no_secret():
    body = b'{"access_token":"api","expires_in":1800}'
    token = shoptet().parse_token("eshop", HttpReply(200, {}, body), None, NOW)
    assert token.refresh_token is None


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, b'{"error":"invalid_token"}', RefreshRejected),
        (403, b'{"error":"addon_suspended"}', RefreshRejected),
        (200, b'{"error":"addon_not_installed"}', RefreshRejected),
        (400, b'{"error":"addon_suspended"}', RefreshRejected),
        (401, b"<html>no</html>", RefreshRejected),
        (403, b"", RefreshRejected),
        (500, b'{"error":"invalid_token"}', RefreshError),
        (502, b"<html>bad gateway</html>", RefreshError),
        (200, b"not json", RefreshError),
        (200, b'{"expires_in":1800}', RefreshError),
        (429, b'{"error":"too_many_tokens"}', RefreshError),
        (400, b'{"error":"something_new"}', RefreshError),
    ],
)
def test_token_endpoint_failures(status, body, error):
    with pytest.raises(error) as caught:
        shoptet().parse_token("eshop", HttpReply(status, {}, body), stored(), NOW)
    assert "stored-oauth" not in str(caught.value)


# -- add-on installation ------------------------------------------------------------------


def test_code_request_posts_json_to_the_token_endpoint():
    platform = shoptet(client_id="addon-7", client_secret="s3cret", redirect_uri="https://addon/install")
    request = platform.code_request("eshop", "the-code", None, NOW)
    assert request.method == "POST"
    assert request.url == "https://12345.myshoptet.com/action/ApiOAuthServer/token"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body or b"") == {
        "client_id": "addon-7",
        "client_secret": "s3cret",
        "code": "the-code",
        "grant_type": "authorization_code",
        "redirect_uri": "https://addon/install",
        "scope": "api",
    }
    explicit = platform.code_request("eshop", "c", "https://elsewhere/", NOW)
    assert json.loads(explicit.body or b"")["redirect_uri"] == "https://elsewhere/"


def test_code_request_without_a_client_secret_sends_none():
    request = shoptet(client_id="addon-7").code_request("eshop", "c", "https://addon/install", NOW)
    assert "client_secret" not in json.loads(request.body or b"")


def test_code_reply_holds_the_oauth_token_and_an_expired_api_token():
    body = json.dumps(
        {
            "access_token": "5wty-oauth",
            "expires_in": None,
            "token_type": "Bearer",
            "scope": "api",
            "eshopId": 222651,
            "eshopUrl": "https://12345.myshoptet.com/",
            "contactEmail": "owner@example.com",
        }
    ).encode()
    tokens = shoptet().parse_code_reply("eshop", HttpReply(200, {}, body), NOW)
    token = tokens["eshop"]
    assert token.refresh_token == "5wty-oauth"
    assert token.access_token == "" and token.expires_at == NOW and not token.is_valid(NOW)
    assert token.extra == {"eshop_id": "222651", "eshop_url": "https://12345.myshoptet.com/"}


def test_a_used_install_code_is_refused():
    reply = HttpReply(400, {}, b'{"error":"invalid_grant"}')
    with pytest.raises(RefreshRejected):
        shoptet().parse_code_reply("eshop", reply, NOW)


def test_there_is_no_consent_link():
    with pytest.raises(NotImplementedError, match="add-on"):
        shoptet().authorize_url("https://addon/install", "state", NOW)


# -- API calls --------------------------------------------------------------------------------


def test_apply_auth_sets_the_token_header_once():
    request = OutgoingRequest(
        "GET", "/api/eshop", "", (("Accept", "application/json"), ("shoptet-access-token", "client's"))
    )
    signed = shoptet().apply_auth("eshop", request, Token("api-1", NOW + 60, NOW), NOW)
    assert [v for k, v in signed.headers if k.lower() == "shoptet-access-token"] == ["api-1"]
    assert signed.header("Accept") == "application/json"


def test_inbound_token_headers_are_credentials():
    assert {"shoptet-access-token", "shoptet-private-api-token"} <= shoptet().credential_headers
    assert shoptet().concurrency_limit == 3


INVALID = {"errorCode": "invalid-token", "message": "Invalid access token.", "instance": "unknown"}
NOT_APPROVED = {"errorCode": "invalid-token", "message": "Addon installation is not approved."}
NO_RIGHTS = {
    "errorCode": "invalid-token-no-rights",
    "message": 'Your access token "afd..123" has no defined rights for this resource.',
    "instance": "x",
}
MISSING = {"errorCode": "missing-access-token", "message": "Missing access token.", "instance": "x"}


@pytest.mark.parametrize(
    ("status", "body", "verdict"),
    [
        (401, envelope(EXPIRED), Verdict.TOKEN_INVALID),
        (401, envelope(INVALID), Verdict.TOKEN_INVALID),
        (401, envelope(MISSING, EXPIRED), Verdict.TOKEN_INVALID),
        (401, envelope(NOT_APPROVED), Verdict.OK),
        (401, envelope(MISSING), Verdict.OK),
        (403, envelope(NO_RIGHTS), Verdict.OK),
        (403, envelope(EXPIRED), Verdict.OK),
        (403, envelope(INVALID), Verdict.OK),
        (429, b"<html>429 Too Many Requests</html>", Verdict.OK),
        (423, envelope({"errorCode": "locked", "message": "Locked", "instance": "x"}), Verdict.OK),
        (401, b"<html>Unauthorized</html>", Verdict.OK),
        (401, b'{"errors": "expired-token"}', Verdict.OK),
        (401, b"", Verdict.OK),
        (500, envelope(EXPIRED), Verdict.OK),
        (200, envelope(EXPIRED), Verdict.OK),
    ],
)
def test_classification(status, body, verdict):
    assert shoptet().classify(HttpReply(status, {}, body)) is verdict


def test_only_401_replies_are_read():
    platform = shoptet()
    assert platform.should_inspect(401, {})
    assert not any(platform.should_inspect(status, {}) for status in (200, 403, 404, 429, 500))


@given(status=st.integers(100, 599), body=st.binary(max_size=300))
def test_classify_never_fails_and_needs_401(status, body):
    verdict = shoptet().classify(HttpReply(status, {}, body))
    assert status == 401 or verdict is Verdict.OK


@given(
    code=st.sampled_from(["expired-token", "invalid-token", "invalid-token-no-rights", "other"]),
    message=st.text(max_size=60),
)
def test_invalid_token_needs_its_message(code, message):
    body = envelope({"errorCode": code, "message": message, "instance": "x"})
    expected = code == "expired-token" or (code == "invalid-token" and "Invalid access token" in message)
    assert (shoptet().classify(HttpReply(401, {}, body)) is Verdict.TOKEN_INVALID) == expected
