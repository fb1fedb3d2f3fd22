"""The request log line: real records from proxied requests, in both formats.

One record per request with request id, app, shop, method, path (secret
query values redacted), status, upstream ms, refreshed and replayed; JSON
for machines, one readable line for a person running curl.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from authproxy import logs
from authproxy.logs import JsonFormatter, TextFormatter, setup_logging
from authproxy.sandbox.oauth2 import OAuth2Sandbox
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from authproxy.store.memory import MemoryStore
from authproxy.tokens.keepalive import KeepAlive
from tests.conftest import oauth2_app, settings_for, url_of

SECRET_QUERY = "limit=5&access_token=tok-SECRET-1&sign=sig-SECRET-2"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access() -> Iterator[list[logging.LogRecord]]:
    """The records of authproxy.access, as the handlers of `setup_logging` receive them."""
    handler, logger = Records(), logging.getLogger("authproxy.access")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


async def gfg_client(serve, proxy_client, clock):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    return sandbox, await proxy_client(settings_for({"gfg": app}), MemoryStore(), clock)


async def test_one_record_per_request_in_json_and_text(serve, proxy_client, clock, access):
    _, client = await gfg_client(serve, proxy_client, clock)
    first = await client.get(f"/gfg/shop1/v2/orders?{SECRET_QUERY}", headers={"X-Request-Id": "curl-1"})
    assert first.status == 200
    assert (await client.get("/gfg/shop1/v2/orders", headers={"X-Request-Id": "curl-2"})).status == 200
    assert len(access) == 2

    data = json.loads(JsonFormatter().format(access[0]))
    assert data["level"] == "info" and data["logger"] == "authproxy.access"
    assert data["request_id"] == "curl-1"
    assert (data["app"], data["shop"], data["method"], data["status"]) == ("gfg", "shop1", "GET", 200)
    assert data["path"] == "/v2/orders?limit=5&access_token=***&sign=***"
    assert isinstance(data["upstream_ms"], float) and data["upstream_ms"] >= 0
    assert (data["refreshed"], data["replayed"]) == (True, False)  # the first request fetched the token
    assert json.loads(JsonFormatter().format(access[1]))["refreshed"] is False

    text = [TextFormatter().format(record) for record in access]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d GET /v2/orders\?limit=5&access_token=\*\*\*&sign=\*\*\* -> 200 "
        r"app=gfg shop=shop1 \d+(\.\d)?ms refreshed id=curl-1",
        text[0],
    ), text[0]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d GET /v2/orders -> 200 app=gfg shop=shop1 \d+(\.\d)?ms id=curl-2", text[1]
    )
    for line in [*text, *(JsonFormatter().format(record) for record in access)]:
        assert "SECRET" not in line and "\n" not in line


async def test_a_replayed_request_says_so(serve, proxy_client, clock, access):
    sandbox = OAuth2Sandbox("cid", "csecret", clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = oauth2_app(base)
    client = await proxy_client(settings_for({"crm": app}), MemoryStore(), clock)
    assert (await client.get("/crm/acme/api/contacts")).status == 200
    sandbox.book.expire_all()
    assert (await client.post("/crm/acme/api/contacts", data=b"{}")).status == 200
    data = json.loads(JsonFormatter().format(access[-1]))
    assert (data["method"], data["refreshed"], data["replayed"]) == ("POST", True, True)
    assert " -> 200 app=crm shop=acme " in TextFormatter().format(access[-1])
    assert TextFormatter().format(access[-1]).split("ms ", 1)[1].startswith("refreshed replayed id=")


async def test_a_proxy_error_shows_its_code_and_no_upstream_time(serve, proxy_client, clock, access):
    sandbox, client = await gfg_client(serve, proxy_client, clock)
    sandbox.knobs.token_status = 503
    reply = await client.get("/gfg/shop1/v2/orders", headers={"X-Request-Id": "curl-3"})
    assert reply.status == 502
    data = json.loads(JsonFormatter().format(access[-1]))
    assert (data["status"], data["error"], data["upstream_ms"]) == (502, "refresh_failed", None)
    line = TextFormatter().format(access[-1])
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d GET /v2/orders -> 502 app=gfg shop=shop1 error=refresh_failed id=curl-3", line
    ), line


@pytest.mark.parametrize("stop_fails", [False, True], ids=["clean stop", "another part fails"])
async def test_lines_waiting_for_their_write_go_out_as_the_server_stops(
    serve, proxy_client, clock, restore_root, monkeypatch, stop_fails
):
    monkeypatch.setattr(logs, "FLUSH_EVERY", 3600.0)  # only the server's stop can write the line
    if stop_fails:

        async def failing_stop(self: KeepAlive) -> None:
            raise RuntimeError("keep-alive failed to stop")

        monkeypatch.setattr(KeepAlive, "stop", failing_stop)
    out = io.StringIO()
    setup_logging("json", "info", stream=out)  # as `serve` has it (in the test: pytest's are set by now)
    _, client = await gfg_client(serve, proxy_client, clock)
    assert (await client.get("/gfg/shop1/v2/orders", headers={"X-Request-Id": "curl-1"})).status == 200
    assert '"authproxy.access"' not in out.getvalue()
    if stop_fails:
        with pytest.raises(Exception, match="keep-alive failed to stop"):
            await client.close()
    else:
        await client.close()
    lines = [json.loads(line) for line in out.getvalue().splitlines() if '"authproxy.access"' in line]
    assert [(line["request_id"], line["status"]) for line in lines] == [("curl-1", 200)]
