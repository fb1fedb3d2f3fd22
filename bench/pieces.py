"""What each piece of the request path costs, timed alone: microseconds per call.

    python bench/pieces.py [--calls 20000] [--rounds 5]

bench/sidebyside.py says what a whole request costs beside the bare proxy, and
bench/bytecodes.py which Python code runs; neither says how many microseconds a
piece takes with the C it calls (HMAC, orjson, regexes, system calls). This
script times the pieces authproxy adds to a request, one after another in a
loop on uvloop, each with the bench's apps (bench/sidebyside.py's config, a
memory:// store, so no Redis): routing, header filtering both ways, the request
id, the auth flow with a token at hand, the shaper's ticket + admit + learn for a
call without a quota of its own (a known-clear shop: no store round trip), the
access line (the JSON handler, writing to /dev/null), the metrics; for Shopee,
signing and the reply's classification. A shaped call's turn is
bench/turn_cost.py's. Prints the best round of each. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from multidict import CIMultiDict, CIMultiDictProxy

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sidebyside

from authproxy import logs
from authproxy.models import HttpReply, OutgoingRequest, Token
from authproxy.proxy import handler
from authproxy.proxy.flow import replay_once
from authproxy.proxy.headers import request_headers, response_headers
from authproxy.proxy.routing import parse_route
from authproxy.runtime import Runtime, open_runtime
from authproxy.settings import load_settings

TARGET = "/shopify/test-shop/admin/api/2024-01/orders.json?limit=5"
CLIENT_HEADERS = CIMultiDictProxy(
    CIMultiDict({"Host": "127.0.0.1:8080", "User-Agent": "wrk", "Accept": "*/*"})
)
REPLY_HEADERS = CIMultiDictProxy(
    CIMultiDict(
        {
            "Server": "nginx/1.22.1",
            "Date": "Sun, 29 Nov 2026 04:00:00 GMT",
            "Content-Type": "application/json",
            "Content-Length": "338",
            "Connection": "keep-alive",
        }
    )
)
SHOPEE_BODY = b'{"error":"","message":"","request_id":"9f2c","response":{"item":[' + b"1," * 100 + b"2]}}"
NOW = time.time()
TOKEN = Token(access_token="t" * 32, expires_at=NOW + 86400, obtained_at=NOW)


class HeldToken:
    """The flow's token source with the token at hand (the cache's common case, without it)."""

    async def current(self, shop: str) -> Token:
        return TOKEN

    async def after_rejection(self, shop: str, sent: Token) -> Token:
        return TOKEN


class ClientRequest:
    """What request_id_for reads of a request."""

    headers = CLIENT_HEADERS


Timed = Callable[[], Any]


async def best_of(rounds: int, calls: int, piece: Timed, awaited: bool) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        if awaited:
            for _ in range(calls):
                await piece()
        else:
            for _ in range(calls):
                piece()
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    return best


def pieces(runtime: Runtime) -> list[tuple[str, Timed, bool]]:
    """(name, the piece, whether it is awaited)."""
    bearer, shopee = runtime.apps["shopify"], runtime.apps["shopee"]
    shaper, metrics = runtime.shaper, runtime.metrics
    key = bearer.tokens.key("test-shop")
    call = OutgoingRequest("GET", "/admin/api/2024-01/orders.json", "limit=5", (("Accept", "*/*"),))
    shopee_call = call._replace(path="/api/v2/order/get_order_list")
    reply = HttpReply(200, REPLY_HEADERS, b"")
    shopee_reply = HttpReply.received(200, REPLY_HEADERS, SHOPEE_BODY)
    exchange = handler.Exchange(
        request_id="f" * 32, method="GET", target="/admin/api/2024-01/orders.json?limit=5"
    )
    exchange.app, exchange.shop, exchange.status, exchange.upstream_ms = "shopify", "test-shop", 200, 1.234

    async def flow() -> None:
        steps = replay_once(bearer.platform, HeldToken(), runtime.clock, "test-shop", call, replayable=True)
        await anext(steps)
        with contextlib.suppress(StopAsyncIteration):  # the reply was not inspected: done
            await steps.asend(None)

    async def shaped() -> None:
        admission = await shaper.admit(key, bearer.platform, call, shaper.ticket(CLIENT_HEADERS))
        await shaper.learn(admission, bearer.platform, reply)

    def classified() -> None:
        shopee.platform.should_inspect(200, REPLY_HEADERS)
        received = HttpReply.received(200, REPLY_HEADERS, SHOPEE_BODY)
        shopee.platform.classify(received)
        shopee.platform.throttle(shopee_reply)

    return [
        ("route (parse_route)", lambda: parse_route(TARGET), False),
        (
            "request headers",
            lambda: request_headers(CLIENT_HEADERS, bearer.platform.credential_headers),
            False,
        ),
        ("reply headers", lambda: response_headers(REPLY_HEADERS), False),
        ("request id", lambda: handler.request_id_for(ClientRequest), False),  # type: ignore[arg-type]
        ("the request's record (Exchange)", lambda: handler.Exchange("f" * 32, "GET", TARGET), False),
        ("auth flow, token at hand (Bearer)", flow, True),
        ("shaper: ticket + admit + learn, no quota", shaped, True),
        ("access line (JSON)", lambda: handler._log_exchange(exchange), False),
        (
            "metrics: request + upstream latency",
            lambda: (metrics.request("shopify", 200), metrics.upstream("shopify", 0.001)),
            False,
        ),
        (
            "Shopee: sign the call",
            lambda: shopee.platform.apply_auth("123456", shopee_call, TOKEN, NOW),
            False,
        ),
        ("Shopee: classify the reply", classified, False),
    ]


async def measure(config: Path, calls: int, rounds: int) -> list[tuple[str, float]]:
    async with open_runtime(load_settings(config), check_keys=False) as runtime:
        timed = [
            (name, await best_of(rounds, calls, piece, awaited)) for name, piece, awaited in pieces(runtime)
        ]
    handler.access_log.flush()
    return timed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "pieces.toml"
        config.write_text(sidebyside.config_text(1, "memory://", "http://127.0.0.1:9", limits=False))
        with open(os.devnull, "w") as nowhere:
            logs.setup_logging("json", "info", nowhere)
            timed = uvloop.run(measure(config, args.calls, args.rounds))
    print("| piece | us per call |\n|---|---:|")
    for name, micros in timed:
        print(f"| {name} | {micros:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
