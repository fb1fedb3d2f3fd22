"""The server's front door (app.py): proxied requests skip the route table, and whatever the
table treats otherwise still goes through it, answered as before."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from authproxy.app import FOR_THE_TABLE
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from authproxy.store.memory import MemoryStore
from tests.conftest import settings_for, url_of

DEADLINE = 10.0


async def _proxy(serve, proxy_client, clock):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    client = await proxy_client(settings_for({"gfg": app}), MemoryStore(), clock)
    return client, sandbox


async def _exchange(port: int, head: bytes, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send a request head; when the server says 100 Continue, the body; return (interim, final)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        interim = b""
        if first.startswith(b"HTTP/1.1 100"):
            interim = first
            writer.write(body)
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        length = int(
            next(line for line in first.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(
                b":", 1
            )[1]
        )
        return interim, first + await asyncio.wait_for(reader.readexactly(length), DEADLINE)
    finally:
        writer.close()


async def test_a_body_sent_after_100_continue_reaches_the_platform(serve, proxy_client, clock):
    """curl sends `Expect: 100-continue` before a body over 1 KiB and waits for the go-ahead."""
    client, sandbox = await _proxy(serve, proxy_client, clock)
    body = b"x" * 5000
    head = (
        b"POST /gfg/s1/v2/items HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    interim, final = await _exchange(client.server.port, head, body)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    assert final.startswith(b"HTTP/1.1 200")
    echo = json.loads(final.partition(b"\r\n\r\n")[2])
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert sandbox.stats.api_calls == 1


async def test_own_endpoints_are_found_also_percent_encoded_or_in_absolute_form(serve, proxy_client, clock):
    client, sandbox = await _proxy(serve, proxy_client, clock)
    for target in (b"/%5Fauthproxy/healthz", b"/_authproxy/health%7A", b"http://x/_authproxy/healthz"):
        _, reply = await _exchange(client.server.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200"), (target, reply)
        assert json.loads(reply.partition(b"\r\n\r\n")[2]) == {"status": "ok"}
    assert sandbox.stats.api_calls == 0


async def test_connect_is_refused_by_the_route_table_as_before(serve, proxy_client, clock):
    """CONNECT's target is an authority: aiohttp's table has no path to route and answers 404;
    it must never reach a platform with a shop's credentials."""
    client, sandbox = await _proxy(serve, proxy_client, clock)
    _, reply = await _exchange(client.server.port, b"CONNECT /gfg/s1/v2/x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404")
    assert b"X-Request-Id" not in reply  # the table's answer, not a platform's passed on
    assert sandbox.stats.api_calls == 0


async def test_a_proxied_request_and_an_unknown_own_path_are_answered_by_the_proxy(
    serve, proxy_client, clock
):
    client, sandbox = await _proxy(serve, proxy_client, clock)
    reply = await client.get("/gfg/s1/v2/products?limit=1")
    assert reply.status == 200 and (await reply.json())["path"] == "/v2/products"
    unknown = await client.get("/_authproxy/nothing-here")
    assert unknown.status == 404
    assert (await unknown.json())["code"] == "unknown_app"
    assert sandbox.stats.api_calls == 1


@pytest.mark.parametrize(
    ("target", "for_the_table"),
    [
        ("/gfg/s1/v2/x", False),
        ("/gfg/s1/v2/x?q=a%20b&next=/auth/o2/token", False),  # the query is not routed on
        ("/_authproxy", False),  # the proxy answers it (unknown app), as the table's catch-all did
        ("/_authproxy/healthz", True),
        ("/%5Fauthproxy/healthz", True),
        ("/gfg/s1/v2%2Fx", True),
        ("/amz/s1/auth/o2/token", True),
        ("http://x/_authproxy/healthz", True),
        ("*", True),
    ],
)
def test_which_targets_the_front_door_leaves_to_the_route_table(target, for_the_table):
    assert bool(FOR_THE_TABLE.match(target)) is for_the_table
