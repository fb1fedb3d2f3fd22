"""Clients that send garbage, send slowly, or leave: raw sockets against the real proxy.

The proxy runs as `authproxy serve` runs it (http_server.ProxyRunner, via the
proxy_client fixture). Malformed requests get 400 problem+json and a few log
lines at most; slow or idle connections are cut after the configured
timeouts (408 problem+json when a request had begun); a normal client's
requests go on meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
from dataclasses import dataclass, field

import pytest

from authproxy.sandbox.sellercenter import SellerCenterSandbox
from authproxy.store.memory import MemoryStore
from tests.conftest import settings_for, url_of

SECRET = "tok-5ecret-in-the-request-line"
DEADLINE = 30.0  # seconds any single connection may take here; the timeouts are ~1 s


def malformed_requests() -> list[bytes]:
    big = "a" * 20000
    garbage = random.Random(8)
    chunked = b"POST /gfg/s1/v2/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    return [
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /gfg/s1/v2/x?access_token={SECRET} HTTP/1.1 junk\r\nHost: x\r\n\r\n".encode(),
        f"GET /gfg/s1/v2/x?access_token={SECRET}\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
        f"GET / HTTP/1.1\r\nHost: x\r\nX-Key: {SECRET}\x00\r\n\r\n".encode(),
        b"GET / HTTP/1.1\r\n: no-name\r\n\r\n",
        chunked + b"\r\nZZ\r\nabc\r\n0\r\n\r\n",
        chunked + b"\r\n5\r\nabc\r\n0\r\n\r\n",
        chunked + b"\r\nFFFFFFFFFFFFFFFFFFFFF\r\n",
        chunked + b"Content-Length: 3\r\n\r\nabc",
        b"POST /gfg/s1/v2/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nabc",
        b"POST /gfg/s1/v2/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc",
        f"GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n".encode(),
        ("GET / HTTP/1.1\r\n" + "".join(f"X-{i}: v\r\n" for i in range(300)) + "\r\n").encode(),
        f"GET /{big}?access_token={SECRET} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # TLS to a plain port
        *(bytes(garbage.getrandbits(8) for _ in range(300)) for _ in range(5)),
    ]


@dataclass
class Reply:
    raw: bytes
    closed: bool  # the server closed the connection (EOF) within the deadline

    @property
    def status(self) -> int:
        return int(self.raw.split(b" ", 2)[1]) if self.raw.startswith(b"HTTP/1.") else 0

    def problem(self) -> dict[str, object]:
        return dict(json.loads(self.raw.partition(b"\r\n\r\n")[2]))


async def send_raw(port: int, data: bytes) -> Reply:
    """Send `data` on a new connection; read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), DEADLINE)
        return Reply(raw, closed=True)
    except TimeoutError:
        return Reply(b"", closed=False)
    finally:
        writer.close()


async def sellercenter_proxy(serve, proxy_client, clock, **server):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    upstream = await serve(sandbox.app())
    app = {"platform": "sellercenter", "base_url": url_of(upstream), "client_id": "app-1"}
    app["client_secret"] = "secret-1"
    client = await proxy_client(settings_for({"gfg": app}, **server), MemoryStore(), clock)
    return client, sandbox


async def test_1000_malformed_requests_get_400_in_a_few_log_lines(serve, proxy_client, clock, logs):
    client, _ = await sellercenter_proxy(serve, proxy_client, clock)
    corpus = malformed_requests()
    gate = asyncio.Semaphore(50)

    async def one(i: int) -> Reply:
        async with gate:
            return await send_raw(client.server.port, corpus[i % len(corpus)])

    logged_before = len(logs.records)
    replies = await asyncio.gather(*(one(i) for i in range(1000)))
    faults = logs.records[logged_before:]

    assert all(reply.closed for reply in replies)
    assert {reply.status for reply in replies} == {400}
    assert {reply.problem()["code"] for reply in replies} == {"bad_request"}
    assert not any(SECRET.encode() in reply.raw for reply in replies)
    assert 1 <= len(faults) <= 5, [record.getMessage() for record in faults]
    assert not any(record.exc_info or record.levelno >= logging.WARNING for record in faults)
    assert SECRET not in logs.text()
    reply = await client.get("/gfg/s1/v2/products")  # and the proxy still serves
    assert reply.status == 200


async def test_a_body_that_turns_malformed_gets_400_and_the_connection_closes(serve, proxy_client, clock):
    client, sandbox = await sellercenter_proxy(serve, proxy_client, clock)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(b"POST /gfg/s1/v2/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)  # the client's pace: the head and a good chunk are in, then garbage
    writer.write(b"ZZ\r\nnot a chunk\r\n0\r\n\r\n")
    reply = Reply(await asyncio.wait_for(reader.read(), DEADLINE), closed=True)
    writer.close()
    assert reply.status == 400
    assert reply.problem()["code"] == "bad_request"
    assert b"X-Request-Id" in reply.raw  # answered by the proxy's handler: the access log has it
    assert sandbox.stats.api_calls == 0


async def test_a_client_leaving_mid_upload_is_logged_as_gone_not_as_an_error(
    serve, proxy_client, clock, logs
):
    client, sandbox = await sellercenter_proxy(serve, proxy_client, clock)
    _, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(b"POST /gfg/s1/v2/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
    await writer.drain()
    writer.transport.abort()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while "client_gone" not in logs.text() and loop.time() < deadline:
        await asyncio.sleep(0.05)  # polling the log for the request's line
    gone = [r for r in logs.records if getattr(r, "fields", {}).get("error") == "client_gone"]
    assert [r.fields["status"] for r in gone] == [499]  # type: ignore[attr-defined]
    assert not any(record.levelno >= logging.ERROR for record in logs.records)
    assert sandbox.stats.api_calls == 0


@dataclass
class Slowloris:
    """A connection that sends `head`, then one more byte of `dribble` every `pace` seconds."""

    head: bytes
    dribble: bytes = b""
    pace: float = 0.2
    received: bytes = b""
    closed: bool = False
    sent: int = field(default=0)

    async def run(self, port: int) -> Slowloris:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        reading = asyncio.ensure_future(reader.read())
        loop = asyncio.get_running_loop()
        give_up = loop.time() + DEADLINE
        try:
            writer.write(self.head)
            while not reading.done() and self.sent < len(self.dribble) and loop.time() < give_up:
                await asyncio.wait([reading], timeout=self.pace)
                writer.write(self.dribble[self.sent : self.sent + 1])
                self.sent += 1
            self.received = await asyncio.wait_for(reading, DEADLINE)
            self.closed = True
        except (TimeoutError, ConnectionError):
            pass
        finally:
            reading.cancel()
            writer.close()
        return self


async def idle_after_a_request(port: int) -> Reply:
    """One whole request and its answer, then silence: the server must close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /_authproxy/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        await reader.readexactly(int(head.split(b"content-length:")[1].split(b"\r\n")[0]))
        return Reply(await asyncio.wait_for(reader.read(), DEADLINE), closed=True)
    except TimeoutError:
        return Reply(b"", closed=False)
    finally:
        writer.close()


async def test_slow_and_idle_connections_are_cut_while_a_normal_client_is_served(
    serve, proxy_client, clock, logs
):
    client, sandbox = await sellercenter_proxy(
        serve, proxy_client, clock, header_timeout=1.0, body_timeout=1.0, keepalive_timeout=2.0
    )
    port = client.server.port
    head_dribblers = [
        Slowloris(b"GET /gfg/s1/v2/x HTTP/1.1\r\nHost: x\r\n", dribble=b"X-Slow: " + b"a" * 1000)
        for _ in range(30)
    ]
    body_dribblers = [
        Slowloris(b"POST /gfg/s1/v2/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", b"b" * 1000)
        for _ in range(30)
    ]
    silent = [Slowloris(b"") for _ in range(30)]  # connect, send nothing
    slow = asyncio.gather(
        *(each.run(port) for each in head_dribblers + body_dribblers + silent),
        *(idle_after_a_request(port) for _ in range(30)),
    )
    normal: list[int] = []
    while not slow.done():  # a normal keep-alive client goes on meanwhile
        reply = await client.get("/gfg/s1/v2/products")
        normal.append(reply.status)
        await reply.read()
        await asyncio.sleep(0.1)  # the normal client's pace
    idle = (await slow)[-30:]

    assert normal and set(normal) == {200}
    for each in head_dribblers:
        assert each.closed and each.sent < 1000, "a head dribbler was not cut off"
        reply = Reply(each.received, closed=True)
        assert (reply.status, reply.problem()["code"]) == (408, "request_timeout")
        assert "header_timeout" in str(reply.problem()["detail"])
    for each in body_dribblers:
        assert each.closed and each.sent < 1000, "a body dribbler was not cut off"
        reply = Reply(each.received, closed=True)
        assert (reply.status, reply.problem()["code"]) == (408, "request_timeout")
        assert "body_timeout" in str(reply.problem()["detail"])
    assert all(each.closed and each.received == b"" for each in silent)
    assert all(each.closed and each.raw == b"" for each in idle)
    assert sandbox.stats.api_calls == len(normal)  # no slow request reached the upstream
    assert not any(record.levelno >= logging.WARNING for record in logs.records)
    assert sum("not complete within" in record.getMessage() for record in logs.records) <= 5


@pytest.mark.parametrize("setting", ["header_timeout", "body_timeout", "keepalive_timeout"])
def test_timeouts_must_be_positive(setting):
    with pytest.raises(ValueError, match=setting):
        settings_for({}, **{setting: 0})


async def test_a_connection_cut_for_a_slow_head_lingers_so_its_408_is_not_reset(serve, proxy_client, clock):
    """Closing a socket that still receives bytes resets the connection, and a client that is
    still sending (as a slow one is) may lose the 408: the proxy shuts its sending side after
    the answer and drops what still comes for a while (a lingering close, as nginx does)."""
    client, sandbox = await sellercenter_proxy(serve, proxy_client, clock, header_timeout=0.5)
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", client.server.port)) as sock:
        sock.setblocking(False)
        await loop.sock_sendall(sock, b"GET /gfg/s1/v2/x HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        answer = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 65536), DEADLINE):
            answer += chunk  # until the proxy's FIN
        # a slow client goes on sending; on loopback a closed peer's reset comes back at once,
        # so the second send would fail if the proxy had closed its socket
        sock.send(b"aaaa")
        sock.send(b"aaaa")
    reply = Reply(answer, closed=True)
    assert (reply.status, reply.problem()["code"]) == (408, "request_timeout")
    assert sandbox.stats.api_calls == 0
