"""Keep-alive across real `authproxy serve` replicas on one real Redis, with lifetimes in
seconds: a fleet of idle Shopee shops kept alive for ten idle lifetimes (also with a
replica SIGKILLed half-way), a rejected and a failing refresh seen by a signed webhook,
and a TikTok authorisation's end warned about three times and listed by the CLI.

Shopee sandbox refresh tokens die IDLE seconds after their issue when unused. With
keepalive_fraction 0.5 each shop is refreshed every 0.4 to 0.5 IDLE (the spread), so a
shop is expected to be refreshed run / (0.45 IDLE) times in a run. Counts come from the
sandbox, never from wall-clock timing.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import signal
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus
from authproxy.runtime import open_runtime
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.sandbox.tiktok import TikTokSandbox
from authproxy.settings import Settings
from tests.conftest import shared_store, url_of
from tests.integration.test_cli import run
from tests.integration.test_events_delivery import until
from tests.procs import ProxyProcess, SharedRedis, proxy_processes, to_toml
from tests.receiver import SECRET, Receiver

PARTNER_ID, PARTNER_KEY = 2001887, "keepalive-processes-partner-key"
APP = "shopee"
SHOPS = 200
IDLE = 10.0  # seconds an unused refresh token lives (Shopee: 30 days)
FRACTION = 0.5
LIFETIMES = 10
#: the lock and the lease scaled with the lifetime: a dead replica's claim and lock are free again in 2 s
SERVER = {"lock_ttl": 2.0, "token_timeout": 1.0, "backoff_base": 0.5, "backoff_max": 4.0}
KEEPALIVE = {"tick": 0.5, "concurrency": 8, "max_per_minute": 100_000, "lease": 2.0}


def shopee_app(base: str, idle: float = IDLE, fraction: float = FRACTION) -> dict[str, Any]:
    return {
        "platform": "shopee",
        "base_url": base,
        "partner_id": PARTNER_ID,
        "partner_key": PARTNER_KEY,
        "refresh_idle_lifetime": idle,
        "keepalive_fraction": fraction,
    }


async def authorize(
    redis_: SharedRedis,
    apps: dict[str, Any],
    shops: dict[str, tuple[ShopeeSandbox, list[str]]],
    idle: float = IDLE,
) -> None:
    """Store a fresh pair per shop as `tokens set` does (through ShopTokens: scheduled)."""
    server = {"store_url": redis_.url, "key_prefix": redis_.prefix, **SERVER}
    settings = Settings(server=server, apps=apps, keepalive=KEEPALIVE)
    async with open_runtime(settings) as runtime:
        for app, (sandbox, names) in shops.items():
            for shop in names:
                pair = sandbox.mint(shop)
                now = time.time()
                token = Token(pair["access_token"], now + 14400, now, pair["refresh_token"], now + idle)
                await runtime.apps[app].tokens.replace(shop, TokenRecord(token=token, last_refresh=now))


def refreshes_per_shop(sandbox: ShopeeSandbox, since: float, until_: float) -> collections.Counter[str]:
    return collections.Counter(
        str(request["body"]["shop_id"])
        for request in sandbox.token_requests
        if since <= request["at"] < until_
    )


async def kill_between_refreshes(
    victim: ProxyProcess, procs: list[ProxyProcess], redis_: SharedRedis
) -> None:
    """SIGKILL `victim` at a moment no replica has a refresh token out at the platform.

    A process killed between the platform's answer and its write loses the rotated
    pair (README: "what remains"); that window is not what this test is about. So every
    replica is stopped (SIGSTOP), and the victim is killed only if no record carries a
    `spending` mark (set before a credential is presented, cleared by the write of its
    outcome); else they all go on and it is tried again a moment later."""
    client = aioredis.Redis.from_url(redis_.url)
    names = [f"{redis_.prefix}:token:{{{APP}:{shop}}}" for shop in range(1, SHOPS + 1)]
    try:
        for _ in range(500):
            for proc in procs:
                os.kill(proc.process.pid, signal.SIGSTOP)
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.hget(name, "spending")
                    marks = await pipe.execute()
                if not any(marks):
                    os.kill(victim.process.pid, signal.SIGKILL)
                    victim.process.wait()
                    return
            finally:
                for proc in procs:
                    if proc.process.poll() is None:
                        os.kill(proc.process.pid, signal.SIGCONT)
            await asyncio.sleep(0.02)  # let the replicas run before the next try
        raise AssertionError("never found a moment without a refresh under way")
    finally:
        await client.aclose()


async def keep_idle_fleet(serve, redis_: SharedRedis, tmp_path, *, kill_one: bool) -> None:
    sandbox = ShopeeSandbox(PARTNER_ID, PARTNER_KEY, refresh_lifetime=IDLE)  # the system clock
    apps = {APP: shopee_app(url_of(await serve(sandbox.app())))}
    shops = [str(n) for n in range(1, SHOPS + 1)]
    sections = {"keepalive": KEEPALIVE}
    async with proxy_processes(apps, redis_, tmp_path, count=3, server=SERVER, sections=sections) as procs:
        await authorize(redis_, apps, {APP: (sandbox, shops)})
        started = time.time()
        if kill_one:
            await asyncio.sleep(LIFETIMES * IDLE / 2)  # the run's length, not a synchronisation
            await kill_between_refreshes(procs[0], procs, redis_)
        await asyncio.sleep(started + LIFETIMES * IDLE - time.time())  # ten lifetimes, no traffic
        ended = time.time()
    # every replica stopped (the survivors gracefully): what the platform and the store say
    assert sandbox.stats.reused_refresh_tokens == 0
    assert sandbox.stats.refused_refreshes == 0  # never a spent, dead or unknown refresh token
    store = shared_store(redis_)
    try:
        records = {shop: await store.get(runtime_key(shop)) for shop in shops}
    finally:
        await store.close()
    marked = [
        shop for shop, record in records.items() if record is None or record.status is not TokenStatus.OK
    ]
    assert marked == []  # 0 shops need re-authorisation
    live = [
        shop
        for shop, record in records.items()
        if record is not None
        and record.token is not None
        and sandbox.book.refresh.get(record.token.refresh_token or "", 0) > ended
    ]
    assert len(live) == SHOPS, sorted(set(shops) - set(live))  # each stored refresh token still works
    expected = (ended - started) / (IDLE * FRACTION * 0.9)
    counts = refreshes_per_shop(sandbox, started, ended)
    outside = {shop: counts[shop] for shop in shops if not 0.75 * expected <= counts[shop] <= 1.25 * expected}
    assert outside == {}, f"expected {expected:.1f} refreshes per shop"


def runtime_key(shop: str) -> TokenKey:
    return TokenKey(APP, shop)


async def test_three_replicas_keep_200_idle_shops_alive_for_ten_lifetimes(serve, real_redis, tmp_path):
    await keep_idle_fleet(serve, real_redis, tmp_path, kill_one=False)


async def test_the_same_with_one_replica_sigkilled_half_way(serve, real_redis, tmp_path):
    await keep_idle_fleet(serve, real_redis, tmp_path, kill_one=True)


async def test_a_rejected_and_a_failing_refresh_reach_the_webhook_signed(serve, real_redis, tmp_path):
    """Lifetimes long enough that backing off for a while does not let the credential die
    (as 30 days are to backoff_max's 300 s); keep-alive looks at each shop within seconds."""
    idle = 60.0
    dead = ShopeeSandbox(PARTNER_ID, PARTNER_KEY, refresh_lifetime=idle)
    flaky = ShopeeSandbox(PARTNER_ID, PARTNER_KEY, refresh_lifetime=idle)
    dead.knobs.reject_refresh = True  # "Invalid refresh_token."
    flaky.knobs.token_status = 503
    receiver = Receiver()
    hook = url_of(await serve(receiver.app())) + "/hook"
    apps = {
        name: shopee_app(url_of(await serve(sandbox.app())), idle, fraction=0.1)
        for name, sandbox in (("dead", dead), ("flaky", flaky))
    }
    events = {"webhook_url": hook, "webhook_secret": SECRET, "poll": 0.1, "retry_base": 0.1, "retry_max": 0.5}
    sections = {"keepalive": KEEPALIVE, "events": {**events, "timeout": 1.0, "claim_after": 3.0}}
    async with proxy_processes(apps, real_redis, tmp_path, count=2, server=SERVER, sections=sections):
        await authorize(real_redis, apps, {"dead": (dead, ["1"]), "flaky": (flaky, ["2"])}, idle)
        await until(lambda: flaky.stats.token_calls >= 5, "five failed attempts", within=60)
        flaky.knobs.token_status = None  # the platform is back
        back = time.time()
        kinds = ("shop.needs_reauthorization", "shop.refresh_failing", "shop.recovered")
        await until(lambda: {e["type"] for e in receiver.events} >= set(kinds), "the three events", within=60)
        await asyncio.sleep(10)  # a while longer: nothing further may happen
    assert receiver.bad == []  # every delivery's signature checked out
    delivered = collections.Counter((e["type"], e["app"], e["shop"]) for e in receiver.events)
    assert delivered == {(kinds[0], "dead", "1"): 1, (kinds[1], "flaky", "2"): 1, (kinds[2], "flaky", "2"): 1}
    assert dead.stats.token_calls == 1 and dead.stats.refused_refreshes == 1  # then left alone
    calls = flaky.stats.token_call_times
    recovery = next(n for n, at in enumerate(calls) if at >= back)  # the first call the platform took
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls[: recovery + 1])]
    assert len(gaps) >= 5
    for failures, gap in enumerate(gaps, start=1):  # never sooner than its backoff step
        assert gap >= 0.75 * min(4.0, 0.5 * 2 ** (failures - 1)) - 0.05, (failures, gap)


async def test_a_tiktok_shop_ending_in_40_scaled_days_is_warned_three_times_and_listed(
    serve, real_redis, tmp_path
):
    """A test day is 1.5 s: warnings at 30, 7 and 1 such days before the end (60 s away)."""
    day = 1.5
    sandbox = TikTokSandbox("tt-key", "tt-secret", authorization_lifetime=40 * day)
    receiver = Receiver()
    hook = url_of(await serve(receiver.app())) + "/hook"
    base = url_of(await serve(sandbox.app()))
    apps = {"tt": {"platform": "tiktok", "app_key": "tt-key", "app_secret": "tt-secret", "auth_url": base}}
    keepalive = {**KEEPALIVE, "tick": 0.25, "warn_before": [30 * day, 7 * day, day]}
    events = {"webhook_url": hook, "webhook_secret": SECRET, "poll": 0.1, "timeout": 1.0, "claim_after": 3.0}
    sections = {"keepalive": keepalive, "events": events}
    config = tmp_path / "operator.toml"
    server = {"store_url": real_redis.url, "key_prefix": real_redis.prefix, **SERVER}
    config.write_text(to_toml({**sections, "server": server, "apps": apps}))
    async with proxy_processes(apps, real_redis, tmp_path, count=2, server=SERVER, sections=sections):
        ending = await cli("authorize", "tt", "ending", "--code", sandbox.issue_auth_code(), config=config)
        authorized = time.time()
        sandbox.book.refresh_lifetime = 400 * day  # another seller granted longer
        await cli("authorize", "tt", "lasting", "--code", sandbox.issue_auth_code(), config=config)
        assert "authorized 1 shop(s) of tt" in ending
        listed = await cli("tokens", "list", "--expiring-within", f"{45 * day:g}s", config=config)
        rows = [line.split() for line in listed.splitlines()[1:]]
        assert [(row[0], row[1], row[3], " ".join(row[-2:])) for row in rows] == [
            ("tt", "ending", "ok", "authorization ends")
        ]
        as_json = json.loads(await cli("tokens", "list", "--expiring-within", "90s", "--json", config=config))
        assert [(item["shop"], item["access_ends"]) for item in as_json] == [("ending", "authorization_ends")]
        assert as_json[0]["access_ends_at"] == pytest.approx(authorized + 40 * day, abs=5)
        expiring = "shop.authorization_expiring"
        three = lambda: sum(e["type"] == expiring for e in receiver.events) >= 3  # noqa: E731
        await until(three, "three warnings", within=40 * day + 10)
        await asyncio.sleep(max(0.0, as_json[0]["access_ends_at"] - time.time()) + 2)  # past the end
    assert receiver.bad == []
    warnings = [(e["shop"], e["data"]["warning"]) for e in receiver.events if e["type"] == expiring]
    assert warnings == [("ending", round(days * day / 86400, 6)) for days in (30, 7, 1)]
    assert sandbox.stats.token_calls == 2  # the two code exchanges: nothing refreshed them


async def cli(*args: str, config: Any) -> str:
    """`authproxy ARGS --config F` in a subprocess; its stdout. The sandboxes it calls
    are served by this process, so it is waited for off the event loop."""
    done = await asyncio.to_thread(run, *args, config=config)
    assert done.returncode == 0, done.stderr
    return done.stdout
