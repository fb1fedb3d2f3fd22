"""Three `authproxy serve` processes on one real Redis keep TikTok's 50 calls/s per API and shop.

3 shops x 2 API paths, each offered 100 calls/s (twice the limit) for 20 s,
spread over the three replicas. The TikTok sandbox runs in a process of its
own and stamps every call with its own clock; the figures come from what it
saw, not from the test's timing.

On a shared 2-core machine this load (about a core) competes with everything
else: a starved process stamps or sends calls late and bunched, which is the
machine, not the shaping. So the figures the issue names (platform 429s <=
0.5 %, delivered >= 95 % of 50/s) are asserted when the run was not starved
(the sandbox's and the load generator's event loops never stalled 0.25 s, and
authproxy's own refusals came back within 0.25 s), and so is the invariant
that no (shop, path) saw more calls in any second than the platform takes
(rate + its burst); all are printed either way. Asserted always: every client
call got 2xx, authproxy's `rate_limited` with a Retry-After that fits the
queue, or (after its one retry) the platform's 429 with a Retry-After in
seconds (in a starved run also upstream_timeout / store_unavailable, which a
process frozen for seconds cannot avoid). What holds whatever the machine does, the order and spacing of the
turns handed out across processes, is tested on the store
(test_rates_store.py: turns from three processes never exceed rate x window + burst).
"""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp

from authproxy.sandbox.__main__ import TIKTOK_APP_KEY, TIKTOK_APP_SECRET
from authproxy.sandbox.limits import most_in_window
from tests.conftest import REDIS_URL, need_real_redis
from tests.procs import SharedRedis, proxy_processes, sandbox_process
from tests.rawhttp import RawClient

RATE, OUR_BURST, PLATFORM_BURST = 50.0, 10, 50
OFFERED = 2 * RATE
SECONDS = 20.0
MAX_WAIT = 1.0
PENALTY = 1.0  # TikTok's throttled replies name no wait
STARVED = 0.25
#: what a replica answers when the sandbox or Redis could not be served for seconds
STARVATION = ("upstream_timeout", "store_unavailable")
SHOPS = ("shop1", "shop2", "shop3")
PATHS = ("/order/202309/orders/search", "/product/202309/products/search")
WARM_UP = "/event/202309/webhooks"

Call = tuple[int, dict[str, str], float]  # status, headers, seconds until the reply


def cipher(shop: str) -> str:
    return f"ROW_{shop}"


async def _offer(
    clients: list[RawClient], stream: int, shop: str, path: str, lags: list[float]
) -> list[Call]:
    """OFFERED calls/s for SECONDS, on schedule whatever the replies do (open loop)."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i: int) -> Call:
        sent = loop.time()
        reply = await clients[(i + stream) % len(clients)].get(f"/tt/{shop}{path}")
        return reply.status, reply.headers, loop.time() - sent

    tasks = []
    for i in range(int(OFFERED * SECONDS)):
        due = start + i / OFFERED
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        lags.append(loop.time() - due)
        tasks.append(asyncio.create_task(one(i)))
    return list(await asyncio.gather(*tasks))


async def _run(tmp_path) -> tuple[list[list[Call]], dict, float]:
    need_real_redis()
    async with (
        sandbox_process("tiktok") as sandbox,
        aiohttp.ClientSession() as session,
    ):
        shops = {}
        for shop in SHOPS:
            async with session.post(
                sandbox + "/_sandbox/refresh_token", json={"cipher": cipher(shop)}
            ) as reply:
                seed = (await reply.json())["refresh_token"]
            shops[shop] = {"shop_cipher": cipher(shop), "refresh_token": seed}
        app = {
            "platform": "tiktok",
            "base_url": sandbox,
            "auth_url": sandbox,
            "app_key": TIKTOK_APP_KEY,
            "app_secret": TIKTOK_APP_SECRET,
            "shops": shops,
        }
        server = {"max_queue_wait": MAX_WAIT, "log_level": "warning"}
        async with proxy_processes({"tt": app}, SharedRedis(REDIS_URL), tmp_path, 3, server) as procs:
            for proc in procs:  # every replica has the tokens before the clock starts
                for shop in SHOPS:
                    async with session.get(f"{proc.url}/tt/{shop}{WARM_UP}") as reply:
                        assert reply.status == 200, await reply.text()
            clients = [RawClient(proc.url) for proc in procs]
            lags: list[float] = []
            streams = [(shop, path) for shop in SHOPS for path in PATHS]
            try:
                calls = await asyncio.gather(
                    *(_offer(clients, i, shop, path, lags) for i, (shop, path) in enumerate(streams))
                )
            finally:
                for client in clients:
                    client.close()
        async with session.get(sandbox + "/_sandbox/arrivals") as reply:
            seen = await reply.json()
    return calls, seen, max(lags)


async def test_three_replicas_hold_tiktok_to_its_quota_per_path_and_shop(tmp_path):
    calls, seen, client_lag = await _run(tmp_path)
    stalls = [s for s in seen["stalls"] if s[1] >= STARVED]

    refusal_latency, passed_through, timeouts = 0.0, 0, 0
    for status, headers, took in (call for stream in calls for call in stream):
        if status == 200:
            continue
        if headers.get("x-authproxy-error") in STARVATION:
            timeouts += 1  # a process starved for seconds: allowed only in a starved run (below)
            continue
        assert status == 429, (status, headers)
        seconds = int(headers["retry-after"])
        if headers.get("x-authproxy-error") == "rate_limited":
            assert headers["x-authproxy-ratelimit-scope"] == "shop"
            assert 1 <= seconds <= math.ceil(MAX_WAIT + PENALTY), headers
            refusal_latency = max(refusal_latency, took)
        else:  # the platform's own 429, after the one retry: the bucket's wait in seconds
            passed_through += 1
            assert 1 <= seconds <= math.ceil(MAX_WAIT + PENALTY), headers
    starved = bool(stalls) or client_lag >= STARVED or refusal_latency >= STARVED
    assert starved or not timeouts, f"{timeouts} timeouts in a healthy run"

    print(
        f"\n{'STARVED' if starved else 'healthy'} run: sandbox stalls {stalls}, client lag "
        f"{client_lag:.2f}s, slowest rate_limited {refusal_latency:.2f}s, {passed_through} platform 429s "
        f"passed through, {timeouts} upstream/store timeouts"
        "\nshop path calls platform-429 delivered/s busiest-1s"
    )
    for shop in SHOPS:
        for path in PATHS:
            arrivals = seen["calls"][f"{cipher(shop)}|{path}"]
            passed = [at for at, ok in arrivals if ok]
            refused = len(arrivals) - len(passed)
            delivered = (len(passed) - OUR_BURST) / (passed[-1] - passed[0])  # burst at once, then on time
            busiest = most_in_window([at for at, _ in arrivals], 1.0)
            print(shop, path, len(arrivals), refused, f"{delivered:.1f}", busiest)
            if not starved:
                assert busiest <= RATE + PLATFORM_BURST, (shop, path, busiest)
                assert refused <= 0.005 * len(arrivals), (shop, path, refused, len(arrivals))
                assert delivered >= 0.95 * RATE, (shop, path, delivered)
    print(f"(at {time.strftime('%H:%M:%S')})")
