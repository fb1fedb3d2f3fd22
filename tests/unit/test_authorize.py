"""The callback's signed state, the callback URL, the callback settings and callback_params (pure)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authproxy.authorize import STATE_LIFETIME, callback_url, sign_state, verify_state
from authproxy.errors import BadState, ConfigError
from authproxy.platforms.amazon import Amazon
from authproxy.platforms.oauth2 import OAuth2
from authproxy.platforms.tiktok import TikTok
from authproxy.settings import AmazonApp, OAuth2App, ServerSettings, TikTokApp, load_settings

SECRET = "state-secret-0123456789"
NOW = 1_700_000_000.0
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,40}", fullmatch=True)


@given(app=names, shop=st.none() | names, now=st.floats(1e9, 4e9), age=st.floats(0, STATE_LIFETIME - 1))
def test_a_signed_state_verifies_for_its_app_until_it_expires(app, shop, now, age):
    state = sign_state(SECRET, app, shop, now)
    claims = verify_state(SECRET, state, app, now + age)
    assert (claims.app, claims.shop) == (app, shop)
    assert claims.expires_at == int(now + STATE_LIFETIME)
    with pytest.raises(BadState, match="expired"):
        verify_state(SECRET, state, app, claims.expires_at)
    with pytest.raises(BadState, match="another app"):
        verify_state(SECRET, state, app + "x", now)
    with pytest.raises(BadState, match="not issued by this proxy"):
        verify_state(SECRET + "x", state, app, now)


@given(st.text(max_size=300))
def test_anything_else_is_a_bad_state_never_a_crash(text):
    with pytest.raises(BadState):
        verify_state(SECRET, text, "amz", NOW)


def test_every_state_is_different_and_url_safe():
    states = {sign_state(SECRET, "amz", "shop1", NOW) for _ in range(50)}
    assert len(states) == 50
    assert all(
        set(s) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") for s in states
    )


def test_a_changed_payload_or_signature_is_refused():
    state = sign_state(SECRET, "amz", "shop1", NOW)
    body, mac = state.split(".")
    forged = json.dumps({"app": "amz", "shop": "victim", "exp": NOW + 10**6, "nonce": "00"}).encode()
    forged_body = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    other_mac = ("B" if mac[0] != "B" else "C") + mac[1:]
    bad_states = (forged_body + "." + mac, body + "." + other_mac, body + "." + mac + ".", body + ".")
    for bad in (*bad_states, body, "." + mac, None, ""):
        with pytest.raises(BadState):
            verify_state(SECRET, bad, "amz", NOW)


def test_callback_url_only_with_public_url():
    assert callback_url(ServerSettings(), "amz") is None
    server = ServerSettings(public_url="https://proxy.example/base/", state_secret=SECRET)  # type: ignore[arg-type]
    assert callback_url(server, "amz") == "https://proxy.example/base/_authproxy/oauth/amz/callback"


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ('public_url = "https://proxy.example"', "needs server.state_secret"),
        ('public_url = "https://proxy.example"\nstate_secret = "short"', "at least 16"),
        ('public_url = "proxy.example"\nstate_secret = "' + SECRET + '"', "http(s) URL"),
        ('public_url = "https://proxy.example/?a=b"\nstate_secret = "' + SECRET + '"', "without query"),
    ],
)
def test_the_callback_settings_are_checked_at_start_up(tmp_path: Path, server, message):
    path = tmp_path / "authproxy.toml"
    path.write_text(f"[server]\n{server}\n")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(path)


def test_the_state_secret_never_shows(tmp_path: Path):
    path = tmp_path / "authproxy.toml"
    path.write_text(f'[server]\npublic_url = "https://proxy.example"\nstate_secret = "{SECRET}"\n')
    settings = load_settings(path)
    assert settings.server.public_url == "https://proxy.example"
    assert SECRET not in repr(settings) and SECRET not in str(settings)


def test_callback_params_per_platform():
    amazon = Amazon(AmazonApp(platform="amazon", client_id="c", client_secret="s"))  # type: ignore[arg-type]
    tiktok = TikTok(TikTokApp(platform="tiktok", app_key="k", app_secret="s"))  # type: ignore[arg-type]
    oauth2 = OAuth2(
        OAuth2App(platform="oauth2", base_url="https://a", token_url="https://a/t", client_id="c")  # type: ignore[arg-type]
    )
    query = {"spapi_oauth_code": "ANDc", "selling_partner_id": "A1SP", "state": "s", "code": "x"}
    assert amazon.callback_params(query) == ("A1SP", "ANDc")
    assert amazon.callback_params({"state": "s"}) == (None, None)
    assert tiktok.callback_params({"code": "TTP_c", "state": "s"}) == (None, "TTP_c")
    assert tiktok.callback_params({"code": "null", "error": "auth_denied"}) == (None, None)
    assert tiktok.callback_params({"code": "null"}) == (None, None)
    assert oauth2.callback_params({"code": "c", "state": "s"}) == (None, "c")
    assert oauth2.callback_params({"error": "access_denied", "code": "c"}) == (None, None)
