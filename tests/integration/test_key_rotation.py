"""The two-phase key roll-out, online, across real processes on real Redis.

Two `authproxy serve` processes, 1,000 Shopee shops sealed under k1. Rolling
restarts to {k1 active, k2 decrypt-only}, then {k2 active}; `authproxy keys
rotate` while the load goes on and Shopee refresh tokens rotate (tokens live
a few seconds here). Then: no request failed, no refresh token was presented
twice (the sandbox counts it) or lost (every stored one is still live at
Shopee), every record is under k2; a start with only k2 succeeds, a start
with only k1 is refused naming k2.

Scale: 1,000 shops, 60 of them "hot" (most of the load), 8 requests in
flight, access tokens living 6 s: a few dozen Shopee rotations during the
rotation itself, about a minute in all on two shared cores.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import subprocess
import sys
from collections import Counter
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiohttp
import redis

from authproxy.keyring import Keyring
from authproxy.models import Token, TokenKey, TokenRecord
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.store.codec import sealed_with
from authproxy.store.redis import RedisStore
from tests.conftest import REDIS_URL, need_real_redis, url_of
from tests.integration.test_shopee_kit import KEY, PARTNER_ID
from tests.procs import ROOT, ProxyProcess, SharedRedis, _start, _wait_ready, to_toml

APP = "sp"
SHOPS = [str(3_000_001 + i) for i in range(1000)]
HOT = SHOPS[:60]
IN_FLIGHT = 8
LIFETIME = 6.0
PATH = "/api/v2/shop/get_shop_info"
KEYS = {"k1": os.urandom(32), "k2": os.urandom(32)}
DRAIN_WITHIN = 30.0


def key_env(*ids: str, active: str) -> dict[str, str]:
    line = ",".join(f"{kid}:{base64.b64encode(KEYS[kid]).decode()}" for kid in ids)
    return {"AUTHPROXY_KEYS": line, "AUTHPROXY_SERVER__ACTIVE_KEY": active}


class Load:
    """Steady traffic to whichever processes are in rotation; every answer kept."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.live: list[str] = []
        self.in_flight: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.running = True

    async def worker(self) -> None:
        while self.running:
            if not self.live:
                await asyncio.sleep(0.01)  # between a retirement and a start
                continue
            url = random.choice(self.live)
            shop = random.choice(HOT) if random.random() < 0.9 else random.choice(SHOPS)
            self.in_flight[url] += 1
            try:
                async with self.session.get(f"{url}/{APP}/{shop}{PATH}") as reply:
                    body = await reply.text()
                    self.statuses[reply.status] += 1
                    if reply.status != 200:
                        self.failures.append(f"{shop}: {reply.status} {body[:200]}")
            except aiohttp.ClientError as exc:
                self.failures.append(f"{shop}: {type(exc).__name__}")
            finally:
                self.in_flight[url] -= 1

    async def retire(self, url: str) -> None:
        """Out of rotation, and its requests in flight answered."""
        self.live.remove(url)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_WITHIN
        while self.in_flight[url]:
            assert loop.time() < deadline, f"{url} still has requests in flight"
            await asyncio.sleep(0.01)

    async def served(self, count: int) -> None:
        """Until `count` more answers arrived (the load really ran in this phase)."""
        target = sum(self.statuses.values()) + count
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while sum(self.statuses.values()) < target:
            assert loop.time() < deadline, "the load stalled"
            await asyncio.sleep(0.05)


async def start(config: Path, tmp_path: Path, env: dict[str, str]) -> ProxyProcess:
    proc = _start(config, tmp_path, 0, env)
    await _wait_ready(proc)
    return proc


def stop(proc: ProxyProcess) -> None:
    proc.process.terminate()
    try:
        proc.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.process.kill()
        proc.process.wait()


async def rolling_restart(
    procs: list[ProxyProcess], load: Load, config: Path, tmp_path: Path, env: dict[str, str]
):
    for i, proc in enumerate(procs):
        await load.retire(proc.url)
        stop(proc)
        procs[i] = await start(config, tmp_path, env)
        load.live.append(procs[i].url)
        await load.served(100)


async def seed(store: RedisStore, sandbox: ShopeeSandbox) -> None:
    now = sandbox.clock.now()
    for shop in SHOPS:
        pair = sandbox.mint(shop)
        token = Token(pair["access_token"], now + pair["expire_in"], now, pair["refresh_token"], now + 86400)
        assert await store.put(TokenKey(APP, shop), TokenRecord(token=token), expected_version=0) == 1


def keys_rotate(config: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authproxy", "keys", "rotate", "--config", str(config), *extra],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_two_phase_roll_out_and_online_rotation_lose_nothing(serve, tmp_path):
    need_real_redis()
    shared = SharedRedis(REDIS_URL)
    sandbox = ShopeeSandbox(PARTNER_ID, KEY, lifetime=LIFETIME)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "shopee", "base_url": base, "partner_id": PARTNER_ID, "partner_key": KEY}
    server: dict[str, Any] = {"store_url": REDIS_URL, "key_prefix": shared.prefix, "log_format": "json"}
    server["token_cache_seconds"] = 1.0  # the store is read (and records opened) all along
    config = tmp_path / "authproxy.toml"
    config.write_text(to_toml({"server": server, "apps": {APP: app}}))
    store = RedisStore.from_url(REDIS_URL, shared.prefix, Keyring({"k1": KEYS["k1"]}, "k1"))
    procs: list[ProxyProcess] = []
    try:
        await seed(store, sandbox)
        procs = list(
            await asyncio.gather(*(start(config, tmp_path, key_env("k1", active="k1")) for _ in "ab"))
        )
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            load = Load(session)
            load.live = [proc.url for proc in procs]
            workers = [asyncio.create_task(load.worker()) for _ in range(IN_FLIGHT)]
            try:
                await load.served(200)
                await rolling_restart(procs, load, config, tmp_path, key_env("k1", "k2", active="k1"))
                await rolling_restart(procs, load, config, tmp_path, key_env("k1", "k2", active="k2"))
                env = key_env("k1", "k2", active="k2")
                dry = keys_rotate(config, env, "--dry-run")
                assert dry.returncode == 0 and "k1 " in dry.stdout, dry.stdout + dry.stderr
                refreshes_before = sandbox.stats.token_calls
                rotation = await asyncio.to_thread(keys_rotate, config, env, "--rate", "400")
                assert rotation.returncode == 0, rotation.stdout + rotation.stderr
                assert "every record is under k2" in rotation.stdout
                rotations_meanwhile = sandbox.stats.token_calls - refreshes_before
                await load.served(200)
            finally:
                load.running = False
                await asyncio.gather(*workers)
        print(f"answers {dict(load.statuses)}; Shopee refreshes during rotation {rotations_meanwhile}")
        print(rotation.stdout)
        assert load.failures == [], load.failures[:20]
        assert rotations_meanwhile > 0  # Shopee refresh tokens rotated while keys rotate ran
        assert sandbox.stats.reused_refresh_tokens == 0
        for proc in procs:
            assert "secret_undecryptable" not in proc.log()
    finally:
        for proc in procs:
            stop(proc)

    try:
        await _every_record_under_k2_with_a_live_refresh_token(shared, sandbox)
        alone = await start(config, tmp_path, key_env("k2", active="k2"))
        stop(alone)
        refused = _start(config, tmp_path, 0, key_env("k1", active="k1"))
        assert refused.process.wait(timeout=60) != 0
        log = refused.log()
        assert "key 'k2' (1000 record(s)" in log and "the keyring has k1" in log, log[-2000:]
        assert base64.b64encode(KEYS["k1"]).decode() not in log
        assert base64.b64encode(KEYS["k2"]).decode() not in log
    finally:
        await store.close()
        client = redis.Redis.from_url(REDIS_URL)
        for name in client.scan_iter(match=f"{shared.prefix}:*"):
            client.delete(name)
        client.close()


async def _every_record_under_k2_with_a_live_refresh_token(
    shared: SharedRedis, sandbox: ShopeeSandbox
) -> None:
    only_k2 = RedisStore.from_url(REDIS_URL, shared.prefix, Keyring({"k2": KEYS["k2"]}, "k2"))
    try:
        found = 0
        async for rows in only_k2.raw_records():
            for row in rows:
                found += 1
                assert sealed_with(row.data) == {"k2"}, row.key
                record = await only_k2.get(row.key)
                assert record is not None and record.token is not None
                assert record.token.refresh_token in sandbox.book.refresh, f"{row.key}: refresh token lost"
        assert found == len(SHOPS)
    finally:
        with suppress(Exception):
            await only_k2.close()
