"""Amazon SP-API through the real app, against the LWA + SP-API sandbox, on every store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from authproxy.errors import RefreshRejected
from authproxy.models import HttpReply, Token, TokenKey, TokenRecord
from authproxy.platforms.amazon import Amazon, amz_date
from authproxy.sandbox.amazon import EXPIRED, INVALID, SCOPES, SELLER, AmazonSandbox
from authproxy.settings import AmazonApp
from authproxy.store import ANY_VERSION, TokenStore
from tests.conftest import settings_for

CLIENT_ID = "amzn1.application-oa2-client.test"
CLIENT_SECRET = "amzn1.oa2-cs.v1.sandbox-secret"
ORDERS = (
    "/amz/seller1/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER&CreatedAfter=2024-01-01T00:00:00Z&q=a%20b"
)


@dataclass
class Env:
    sandbox: AmazonSandbox
    seed: str
    client: Any
    store: TokenStore
    config: dict[str, Any]

    def refresh_form(self, refresh_token: str | None = None) -> dict[str, str]:
        return {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token or self.seed,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }


@pytest.fixture
async def env(serve, proxy_client, stores, clock) -> Env:
    sandbox = AmazonSandbox(CLIENT_ID, CLIENT_SECRET, clock=clock)
    seed = sandbox.seed_refresh_token()
    server = await serve(sandbox.app())
    base = str(server.make_url("")).rstrip("/")
    config = {
        "platform": "amazon",
        "base_url": base,
        "auth_url": base,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "shops": {"seller1": {"refresh_token": seed}},
    }
    store = stores.make()
    client = await proxy_client(settings_for({"amz": config}), store, clock)
    return Env(sandbox, seed, client, store, config)


async def get_json(env: Env, path: str, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    reply = await env.client.get(path, **kwargs)
    return reply, await reply.json(content_type=None)


async def test_get_json_carries_lwa_token_date_and_user_agent(env, clock):
    reply, body = await get_json(env, ORDERS, skip_auto_headers=["User-Agent"])
    assert reply.status == 200, body
    assert body["query"] == "MarketplaceIds=ATVPDKIKX0DER&CreatedAfter=2024-01-01T00:00:00Z&q=a%20b"
    assert env.sandbox.grants[body["headers"]["x-amz-access-token"]] == SELLER
    assert body["headers"]["x-amz-date"] == amz_date(clock.now())
    assert body["user_agent"] == "authproxy/0.1 (Language=Python)"
    assert "x-amzn-RequestId" in reply.headers and "X-AuthProxy-Retried" not in reply.headers
    assert env.sandbox.token_requests == [env.refresh_form()]
    reply, body = await get_json(env, "/amz/seller1/sellers/v1/marketplaceParticipations")
    assert reply.status == 200, body
    assert env.sandbox.stats.token_calls == 1  # the token is reused


async def test_post_json_body_forwarded(env):
    payload = json.dumps({"contentType": "text/xml; charset=UTF-8"}).encode()
    reply = await env.client.post(
        "/amz/seller1/feeds/2021-06-30/documents", data=payload, headers={"Content-Type": "application/json"}
    )
    body = await reply.json()
    assert reply.status == 200, body
    assert (body["method"], body["body_bytes"]) == ("POST", len(payload))
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert body["headers"]["content-type"] == "application/json"
    reply = await env.client.post("/amz/seller1/orders/v0/orders/902-1/shipment", json={"status": "x"})
    assert reply.status == 200


async def test_expiry_refreshes_with_the_exact_lwa_request(env, clock):
    first = (await get_json(env, ORDERS))[1]["headers"]["x-amz-access-token"]
    clock.advance(3601)
    reply, body = await get_json(env, ORDERS)
    assert reply.status == 200, body
    assert body["headers"]["x-amz-access-token"] != first
    assert "X-AuthProxy-Retried" not in reply.headers
    assert env.sandbox.stats.token_calls == 2
    # LWA refresh tokens do not rotate: the same one is presented each time
    assert env.sandbox.token_requests == [env.refresh_form(), env.refresh_form()]
    assert env.sandbox.stats.rejected_api_calls == 0


@pytest.mark.parametrize("how", ["expired", "revoked"])
async def test_token_403_refreshes_once_and_replays(env, how):
    await get_json(env, ORDERS)
    if how == "expired":
        env.sandbox.book.expire_all()  # Amazon says expired before the proxy's clock does
    else:
        env.sandbox.revoke_all()
    reply, body = await get_json(env, ORDERS)
    assert reply.status == 200, body
    assert reply.headers["X-AuthProxy-Retried"] == "1"
    stats = env.sandbox.stats
    assert (stats.rejected_api_calls, stats.api_calls, stats.token_calls) == (1, 2, 2)
    assert env.sandbox.token_requests[-1] == env.refresh_form()


async def test_empty_details_403_is_passed_through_unretried(env):
    reply, body = await get_json(env, "/amz/seller1/finances/v0/financialEvents")
    assert reply.status == 403
    assert body["errors"][0] == {
        "code": "Unauthorized",
        "message": body["errors"][0]["message"],
        "details": "",
    }
    assert reply.headers["x-amzn-ErrorType"] == "AccessDeniedException"
    assert "X-AuthProxy-Retried" not in reply.headers and "X-AuthProxy-Error" not in reply.headers
    assert (env.sandbox.stats.api_calls, env.sandbox.stats.token_calls) == (1, 1)


async def test_client_credentials_are_replaced(env):
    headers = {
        "x-amz-access-token": "Atza|client-supplied",
        "Authorization": "Bearer client",
        "User-Agent": "MyApp/1.0 (Language=Python)",
        "x-amz-date": "19990101T000000Z",
    }
    reply, body = await get_json(env, ORDERS, headers=headers)
    assert reply.status == 200, body
    sent = body["headers"]
    assert sent["x-amz-access-token"] != "Atza|client-supplied"
    assert env.sandbox.grants[sent["x-amz-access-token"]] == SELLER
    assert "authorization" not in sent
    assert sent["x-amz-date"] != "19990101T000000Z"
    assert body["user_agent"] == "MyApp/1.0 (Language=Python)"


@pytest.mark.parametrize(
    ("shop", "method", "path", "scope"),
    [
        ("grantless:notifications", "GET", "/notifications/v1/destinations", SCOPES[0]),
        ("grantless:migration", "GET", "/authorization/v1/authorizationCode?sellingPartnerId=A1", SCOPES[1]),
        ("grantless:rotation", "POST", "/applications/2023-11-30/clientSecret", SCOPES[2]),
    ],
)
async def test_grantless_call_gets_a_client_credentials_token(env, shop, method, path, scope):
    reply = await env.client.request(method, f"/amz/{shop}{path}")
    body = await reply.json()
    assert reply.status == 200, body
    assert body["grant"] == scope
    assert env.sandbox.grants[body["headers"]["x-amz-access-token"]] == scope
    assert env.sandbox.token_requests == [
        {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
    ]


async def test_grantless_and_seller_tokens_do_not_mix(env):
    assert (await env.client.get("/amz/grantless:notifications/notifications/v1/destinations")).status == 200
    assert (await env.client.get(ORDERS)).status == 200
    for path in (
        "/amz/seller1/notifications/v1/destinations",
        "/amz/grantless:notifications/orders/v0/orders",
    ):
        reply = await env.client.get(path)
        assert reply.status == 403, path  # Amazon's own answer: wrong token kind, not retried
        assert "X-AuthProxy-Retried" not in reply.headers
    assert env.sandbox.stats.token_calls == 2  # one seller token, one grantless token
    unknown = await env.client.get("/amz/grantless:reports/reports/2021-06-30/reports")
    assert (unknown.status, unknown.headers["X-AuthProxy-Error"]) == (404, "unknown_shop")


async def test_invalid_grant_needs_reauthorization_without_looping(env):
    env.sandbox.knobs.reject_refresh = True
    for _ in range(2):
        reply, body = await get_json(env, ORDERS)
        assert reply.status == 401, body
        assert reply.headers["X-AuthProxy-Error"] == "needs_reauthorization"
        assert reply.headers["Content-Type"].startswith("application/problem+json")
        assert (body["code"], body["app"], body["shop"]) == ("needs_reauthorization", "amz", "seller1")
    assert env.sandbox.stats.token_calls == 1
    assert env.sandbox.stats.api_calls == 0


async def test_invalid_grant_during_replay_stops_after_one_refresh(env):
    await get_json(env, ORDERS)
    env.sandbox.book.expire_all()
    env.sandbox.knobs.reject_refresh = True
    reply, body = await get_json(env, ORDERS)
    assert (reply.status, body["code"]) == (401, "needs_reauthorization")
    stats = env.sandbox.stats
    assert (stats.token_calls, stats.rejected_api_calls, stats.api_calls) == (2, 1, 1)


async def test_lwa_outage_is_refresh_failed(env):
    env.sandbox.knobs.token_status = 503
    reply, body = await get_json(env, ORDERS)
    assert (reply.status, body["code"]) == (502, "refresh_failed")
    assert env.sandbox.stats.api_calls == 0


async def test_configured_refresh_token_wins_over_stored(env, clock):
    other = env.sandbox.seed_refresh_token()
    stale = Token(
        "Atza|stale", expires_at=clock.now() - 1, obtained_at=clock.now() - 3601, refresh_token=other
    )
    await env.store.put(TokenKey("amz", "seller1"), TokenRecord(token=stale), expected_version=ANY_VERSION)
    reply, _ = await get_json(env, ORDERS)
    assert reply.status == 200
    assert env.sandbox.token_requests == [env.refresh_form()]
    stored = await env.store.get(TokenKey("amz", "seller1"))
    assert stored is not None and stored.token is not None and stored.token.refresh_token is None


async def test_authorized_shop_uses_its_stored_refresh_token(env, clock):
    assert (await env.client.get("/amz/newseller/orders/v0/orders")).status == 404
    platform = Amazon(AmazonApp(**env.config))
    code = env.sandbox.issue_code("https://app.example/amazon/callback")
    request = platform.code_request("newseller", code, "https://app.example/amazon/callback", clock.now())
    async with aiohttp.ClientSession() as session:
        reply = await _call(session, request)
        again = await _call(session, request)
    token = platform.parse_code_reply("newseller", reply, clock.now())["newseller"]
    with pytest.raises(RefreshRejected):
        platform.parse_code_reply("newseller", again, clock.now())  # codes are single use
    await env.store.put(TokenKey("amz", "newseller"), TokenRecord(token=token), expected_version=0)
    assert (await env.client.get("/amz/newseller/orders/v0/orders")).status == 200
    clock.advance(3601)
    assert (await env.client.get("/amz/newseller/orders/v0/orders")).status == 200
    assert env.sandbox.token_requests[-1] == env.refresh_form(token.refresh_token)


async def test_secrets_stay_out_of_logs(env, logs):
    await get_json(env, ORDERS)
    env.sandbox.book.expire_all()
    access = (await get_json(env, ORDERS))[1]["headers"]["x-amz-access-token"]
    env.sandbox.book.expire_all()
    env.sandbox.knobs.reject_refresh = True
    await get_json(env, ORDERS)
    text = logs.text()
    assert "needs re-authorization" in text
    for secret in (CLIENT_SECRET, env.seed, access):
        assert secret not in text


async def _call(session: aiohttp.ClientSession, request: Any) -> HttpReply:
    async with session.request(
        request.method, request.url, headers=dict(request.headers), data=request.body
    ) as reply:
        return HttpReply(reply.status, dict(reply.headers), await reply.read())


def test_sandbox_answer_texts_are_the_documented_ones():
    assert EXPIRED == "The access token you provided has expired."
    assert INVALID == "The access token you provided is revoked, malformed or invalid."


async def test_demo_entry_answers_2xx(serve, proxy_client, stores):
    from authproxy.demo import demo_platforms

    (entry,) = [p for p in demo_platforms() if p.app == "amazon"]
    server = await serve(entry.sandbox.app())
    config = entry.config(str(server.make_url("")).rstrip("/"))
    client = await proxy_client(settings_for({entry.app: config}), stores.make())
    reply = await client.get(f"/{entry.app}{entry.curl_path}")
    assert reply.status == 200, await reply.text()
    assert entry.sandbox.stats.token_calls == 1


async def test_a_clients_host_header_never_reaches_the_platform(env):
    """python-amazon-sp-api sends `endpoint[8:]` as Host, garbled over http (issue 15): the
    sandbox, which checks Host as a gateway routes on it, gets the upstream's own."""
    for host in ("27.0.0.1:8080/amz/seller1", "evil.example", "sellingpartnerapi-na.amazon.com"):
        reply, body = await get_json(
            env, "/amz/seller1/sellers/v1/marketplaceParticipations", headers={"Host": host}
        )
        assert reply.status == 200, body
    assert env.sandbox.stats.rejected_api_calls == 0


async def test_the_sandbox_refuses_a_foreign_host(env):
    """The check above can fail: the sandbox refuses a Host that is not its own."""
    base = env.config["base_url"]
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            base + "/sellers/v1/marketplaceParticipations", headers={"Host": "27.0.0.1:8080/amz/seller1"}
        ) as reply,
    ):
        assert reply.status == 400
        assert (await reply.json())["errors"][0]["code"] == "InvalidInput"
