"""Every error path, then a search of every log line and error body for every secret configured."""

from __future__ import annotations

from authproxy.events import Event, EventType
from authproxy.models import TokenKey
from authproxy.runtime import RUNTIME
from authproxy.sandbox.oauth2 import OAuth2Sandbox
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from authproxy.settings import Settings
from authproxy.store.memory import MemoryStore
from authproxy.store.redis import RedisStore
from tests.conftest import url_of
from tests.integration.test_events_delivery import until
from tests.procs import free_port

GFG_SECRET = "gfg-secret-Zq81"
OAUTH_SECRET = "oauth-secret-Kw27"
SEED = "seed-refresh-Pp55"
CLIENT_KEY = "client-key-Xx99aa"
HOOK_SECRET = "webhook-secret-Hh42hh42"
HOOK_URL_TOKEN = "hook-url-token-Uu17"


async def test_no_secret_in_logs_or_error_bodies(serve, proxy_client, clock, logs):
    gfg = SellerCenterSandbox({"app-1": GFG_SECRET}, clock=clock)
    gfg_url = url_of(await serve(gfg.app()))
    oauth = OAuth2Sandbox("cid", OAUTH_SECRET, clock=clock)
    oauth_url = url_of(await serve(oauth.app()))
    dead = f"http://127.0.0.1:{free_port()}"
    apps = {
        "gfg": {
            "platform": "sellercenter",
            "base_url": gfg_url,
            "client_id": "app-1",
            "client_secret": GFG_SECRET,
        },
        "down": {
            "platform": "sellercenter",
            "base_url": dead,
            "auth_url": gfg_url,
            "client_id": "app-1",
            "client_secret": GFG_SECRET,
        },
        "crm": {
            "platform": "oauth2",
            "base_url": oauth_url,
            "token_url": oauth_url + "/oauth/token",
            "grant_type": "refresh_token",
            "client_id": "cid",
            "client_secret": OAUTH_SECRET,
            "shops": {"acme": {"refresh_token": SEED}},
        },
    }
    settings = Settings(
        server={"store_url": "memory://", "read_timeout": 0.2},
        apps=apps,
        clients={"app": {"key": CLIENT_KEY}},
        events={  # a receiver that is not there: failed deliveries get logged
            "webhook_url": f"{dead}/hook?token={HOOK_URL_TOKEN}",
            "webhook_secret": HOOK_SECRET,
            "retry_base": 0.01,
        },
    )
    key = {"X-AuthProxy-Key": CLIENT_KEY}
    client = await proxy_client(settings, MemoryStore(), clock)
    runtime = client.server.app[RUNTIME]
    await runtime.events.emit(
        Event.new(EventType.NEEDS_REAUTHORIZATION, TokenKey("crm", "acme"), clock.now())
    )
    await until(lambda: runtime.event_delivery.failures >= 2, "failed webhook deliveries")
    bodies = []
    for method, path, headers in [
        ("GET", "/gfg/s1/v2/x?access_token=client-tok&sign=client-sign", key),  # 200
        ("GET", "/gfg/s1/v2/slow?seconds=1", key),  # upstream_timeout
        ("GET", "/down/s1/v2/x", key),  # upstream_unreachable
        ("GET", "/crm/acme/api/x", key),  # invalid_grant: the seed was never issued
        ("GET", "/nope/s1/x", key),  # unknown_app
        ("GET", "/gfg/s1/x", {"X-AuthProxy-Key": CLIENT_KEY[:-1]}),  # unauthorized_client
    ]:
        reply = await client.request(method, path, headers=headers)
        if "X-AuthProxy-Error" in reply.headers:  # the proxy's own answers, not the sandbox's echo
            bodies.append(await reply.text())
    gfg.knobs.token_status = 500
    clock.advance(7200)
    reply = await client.get("/gfg/s1/v2/x", headers=key)  # refresh_failed
    bodies.append(await reply.text())
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", "down")
    broken = await proxy_client(settings, store, clock)
    reply = await broken.get("/gfg/s1/v2/x", headers=key)  # store_unavailable
    bodies.append(await reply.text())
    await store.close()
    issued = [*gfg.book.access, *oauth.book.access]
    text = logs.text() + "\n".join(bodies)
    assert len(bodies) == 7
    assert "store_unavailable" in text and "refresh_failed" in text and "needs_reauthorization" in text
    for secret in [
        GFG_SECRET,
        OAUTH_SECRET,
        SEED,
        CLIENT_KEY,
        CLIENT_KEY[:-1],
        HOOK_SECRET,
        HOOK_URL_TOKEN,
        "client-tok",
        "client-sign",
        *issued,
    ]:
        assert secret not in text, secret
