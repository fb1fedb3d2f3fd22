"""Failover of the store under real `authproxy serve` processes and the Shopee sandbox
(rotating, single-use refresh tokens), on private Sentinel and Cluster sets:

- lost rotation: replication cut (a relay the test holds: the write stays with the
  master), a refresh forced, the master killed, the replica promoted -> the process that
  got the pair kept it (WAIT was not confirmed), re-asserts it on the new master, the shop
  still works;
- the master SIGKILLed under steady load on two proxies -> only 2xx or store_unavailable,
  503s only within the failover window, no refresh token presented twice;
- READONLY: a standalone master turned replica for 3 s -> store_unavailable meanwhile,
  2xx within 1 s after, no restart.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis

from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.settings import StoreSettings
from authproxy.store import ANY_VERSION
from authproxy.store.redis import RedisStore
from tests.conftest import url_of
from tests.integration.test_shopee_kit import APP, KEY, PARTNER_ID, SHOP
from tests.procs import ProxyProcess, SharedRedis, proxy_processes
from tests.redis_server import redis_server_in
from tests.redis_topology import ClusterSet, SentinelSet

GET_SHOP = f"/{APP}/{SHOP}/api/v2/shop/get_shop_info"
TOKEN = TokenKey(APP, SHOP)


async def until(condition: Callable[[], Awaitable[bool]], seconds: float, what: str) -> float:
    """Poll an async condition (other processes change the state), bounded; the time it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not await condition():
        assert loop.time() - started < seconds, f"not within {seconds}s: {what}"
        await asyncio.sleep(0.05)
    return loop.time() - started


async def status(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as reply:
        return reply.status, reply.headers.get("X-AuthProxy-Error", "")


async def unconfirmed(session: aiohttp.ClientSession, proxy: ProxyProcess) -> float:
    async with session.get(proxy.url + "/_authproxy/metrics") as reply:
        text = await reply.text()
    found = re.search(r'^authproxy_store_unconfirmed_writes_total\{app="sp"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def shopee_app(base: str) -> dict[str, Any]:
    return {APP: {"platform": "shopee", "base_url": base, "partner_id": PARTNER_ID, "partner_key": KEY}}


async def seed_expired(store: RedisStore, sandbox: ShopeeSandbox) -> str:
    """A pair whose access token has expired: the next call refreshes. Its refresh token."""
    pair = sandbox.mint(SHOP)
    now = time.time()
    spent = str(pair["refresh_token"])
    await store.put(
        TOKEN, TokenRecord(token=Token(pair["access_token"], now - 1, now - 14400, spent)), expected_version=0
    )
    return spent


async def stored_refresh(store: RedisStore) -> str | None:
    try:
        record = await store.get(TOKEN)
    except Exception:  # the test's own connection meets the failover too
        return None
    return record.token.refresh_token if record is not None and record.token is not None else None


def replica_reader(port: int) -> redis.Redis:
    """A client of a replica that may read (a Cluster replica answers MOVED unless READONLY)."""
    client = redis.Redis(port=port, single_connection_client=True)
    if client.info("cluster").get("cluster_enabled"):
        client.execute_command("READONLY")
    return client


async def lost_rotation(
    serve: Any,
    tmp_path: Path,
    url: str,
    replica_port: int,
    cut: Callable[[], None],
    fail_over: Callable[[], None],
) -> None:
    """The seed on the replica; replication cut; a refresh forced (the pair is on the master
    only, WAIT unconfirmed: kept); the master killed and the replica promoted -> the process
    re-asserts the pair on the new master, the shop still works."""
    sandbox = ShopeeSandbox(PARTNER_ID, KEY)
    base = url_of(await serve(sandbox.app()))
    shared = SharedRedis(url)
    store = RedisStore.from_settings(StoreSettings(url=shared.url, key_prefix=shared.prefix, timeout=10.0))
    spent = await seed_expired(store, sandbox)
    replica = replica_reader(replica_port)
    name = f"{shared.prefix}:token:{{{APP}:{SHOP}}}"
    await until(lambda: _now(bool(replica.exists(name))), 30, "the seed on the replica")
    server = {"store_wait_replicas": 1, "store_wait_ms": 200, "token_cache_seconds": 0.0, "lock_ttl": 20.0}
    try:
        async with (
            proxy_processes(shopee_app(base), shared, tmp_path, count=1, server=server) as (proxy,),
            aiohttp.ClientSession() as session,
        ):
            cut()  # a partition: the master's writes no longer reach the replica
            assert await status(session, proxy.url + GET_SHOP) == (200, "")  # refreshed, kept
            newest = await stored_refresh(store)
            assert newest is not None and newest != spent and newest in sandbox.book.refresh
            assert await unconfirmed(session, proxy) >= 1
            assert not replica.hget(name, "data") or await _replica_has_not(replica, name, newest, store)
            await asyncio.to_thread(fail_over)
            # the promoted replica holds the spent pair; the process re-asserts its own
            took = await until(lambda: _holds(store, newest), 10, "the kept pair on the new master")
            assert took < 2.0, took
            print(f"kept pair on the new master {took:.2f}s after the failover")
            assert await status(session, proxy.url + GET_SHOP) == (200, "")
            record = await store.get(TOKEN)
            assert record is not None and record.status is TokenStatus.OK
            assert "not confirmed by its replicas" in proxy.log()
    finally:
        await store.close()
        replica.close()
    assert sandbox.stats.reused_refresh_tokens == 0
    assert sandbox.stats.presented_refresh_tokens.count(spent) == 1


async def _replica_has_not(replica: redis.Redis, name: str, newest: str, store: RedisStore) -> bool:
    """The replica still holds the spent pair (its record's version is behind the master's)."""
    record = await store.get(TOKEN)
    assert record is not None
    return int(replica.hget(name, "v") or 0) < record.version


async def test_a_rotation_the_replica_never_saw_survives_a_sentinel_failover(
    serve: Any, tmp_path: Path, sentinel_set: SentinelSet
) -> None:
    def fail_over() -> None:
        old_port = sentinel_set.master.port
        sentinel_set.master.kill()
        sentinel_set.wait_failover(old_port)

    replica = sentinel_set.replica.port
    await lost_rotation(serve, tmp_path, sentinel_set.url, replica, sentinel_set.relay.cut, fail_over)


async def test_a_rotation_the_replica_never_saw_survives_a_cluster_failover(
    serve: Any, tmp_path: Path, cluster_set: ClusterSet
) -> None:
    primary = cluster_set.primary_of(f"{{{APP}:{SHOP}}}")
    relay = await asyncio.to_thread(cluster_set.relay_replication_of, primary)
    replica = next(node for node in cluster_set.nodes if cluster_set._master_port(node) == relay.port)

    def fail_over() -> None:
        primary.kill()
        cluster_set.wait_promoted(primary.port, relay.port)

    await lost_rotation(serve, tmp_path, cluster_set.url, replica.port, relay.cut, fail_over)


async def _now(value: bool) -> bool:
    return value


async def _holds(store: RedisStore, refresh: str) -> bool:
    return await stored_refresh(store) == refresh


class Load:
    """Steady traffic on each proxy (two clients each, one request after another), every
    reply recorded with when it came back."""

    def __init__(self, session: aiohttp.ClientSession, proxies: list[ProxyProcess]) -> None:
        self.session, self.proxies = session, proxies
        self.replies: list[tuple[float, int, str]] = []
        self.refusals: list[str] = []  # what each non-2xx reply said, for a failure's message
        self.slowest = 0.0
        self.running = True
        self.tasks = [asyncio.create_task(self._client(proxy)) for proxy in proxies for _ in range(2)]

    async def _client(self, proxy: ProxyProcess) -> None:
        loop = asyncio.get_running_loop()
        while self.running:
            started = loop.time()
            reply = await self._get(proxy.url + GET_SHOP)
            self.replies.append((loop.time(), *reply))
            self.slowest = max(self.slowest, loop.time() - started)
            await asyncio.sleep(0.02)  # the pace of the traffic, not a synchronisation

    async def _get(self, url: str) -> tuple[int, str]:
        async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as reply:
            if reply.status != 200:
                at, wall = asyncio.get_running_loop().time(), time.time()  # the logs' clock too
                stamp = time.strftime("%H:%M:%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"
                self.refusals.append(f"at {at:.3f} ({stamp}): {reply.status} {(await reply.read())[:300]!r}")
            return reply.status, reply.headers.get("X-AuthProxy-Error", "")

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks)

    def between(self, start: float, end: float) -> list[tuple[int, str]]:
        return [(code, error) for at, code, error in self.replies if start <= at < end]


def check_window(load: Load, killed: float, recovered: float, after: float) -> dict[str, float]:
    """Only 2xx or store_unavailable; 503s only between the kill and recovery; all 2xx after.
    A failure's message has the refusals and what the proxies logged besides 200s."""
    kinds = {(code, error) for _, code, error in load.replies}
    story = f"killed at {killed:.3f}, recovered at {recovered:.3f}\n" + "\n".join(load.refusals[:10])
    assert kinds <= {(200, ""), (503, "store_unavailable")}, f"{kinds}\n{story}\n{unusual(load.proxies)}"
    failed = [at for at, code, _ in load.replies if code != 200]
    assert all(killed <= at <= recovered for at in failed), f"{failed}\n{story}\n{unusual(load.proxies)}"
    assert load.between(recovered, after), "no traffic after the failover"
    assert set(load.between(recovered, after)) == {(200, "")}
    first_503, last_503 = (min(failed), max(failed)) if failed else (killed, killed)
    window = round(last_503 - first_503, 2)
    return {"503s": len(failed), "replies": len(load.replies), "503_window": window, "slowest": load.slowest}


def unusual(proxies: list[ProxyProcess], last: int = 60) -> str:
    """The proxies' log lines other than 200 answers (the latest `last` of each)."""
    lines = []
    for proxy in proxies:
        kept = [line[:500] for line in proxy.log().splitlines() if '"status":200' not in line]
        lines += [f"{proxy.url} {line}" for line in kept[-last:]]
    return "\n".join(lines)


async def test_sentinel_master_killed_under_load_on_two_proxies(
    serve: Any, tmp_path: Path, sentinel_set: SentinelSet
) -> None:
    sandbox = ShopeeSandbox(PARTNER_ID, KEY, lifetime=3.0)  # rotations all through the test
    base = url_of(await serve(sandbox.app()))
    shared = SharedRedis(sentinel_set.url)
    store = RedisStore.from_settings(StoreSettings(url=shared.url, key_prefix=shared.prefix))
    await seed_expired(store, sandbox)
    await store.close()
    server = {"token_cache_seconds": 0.0, "store_timeout": 2.0, "lock_ttl": 20.0}
    loop = asyncio.get_running_loop()
    async with (
        proxy_processes(shopee_app(base), shared, tmp_path, count=2, server=server) as proxies,
        aiohttp.ClientSession() as session,
    ):
        load = Load(session, proxies)
        await until(lambda: _now(sandbox.stats.token_calls >= 2), 30, "rotations under load")
        old_port = sentinel_set.master.port
        killed = loop.time()
        sentinel_set.master.kill()
        await asyncio.to_thread(sentinel_set.wait_failover, old_port)
        failed_over = loop.time()
        # detection (down-after-milliseconds 1000) and the election are Sentinel's; the
        # store may answer 503 for up to 3 s past a new master taking writes
        recovered = failed_over + 3.0
        await until(lambda: _now(loop.time() > recovered + 4.0), 30, "traffic after the failover")
        await load.stop()
    figures = check_window(load, killed, recovered, recovered + 4.0)
    print(f"sentinel: failover {failed_over - killed:.2f}s after the kill, {figures}")
    assert sandbox.stats.reused_refresh_tokens == 0  # no refresh token presented twice
    assert sandbox.stats.token_calls >= 3


async def test_cluster_primary_of_the_shop_killed_under_load(
    serve: Any, tmp_path: Path, cluster_set: ClusterSet
) -> None:
    sandbox = ShopeeSandbox(PARTNER_ID, KEY, lifetime=3.0)
    base = url_of(await serve(sandbox.app()))
    shared = SharedRedis(cluster_set.url)
    store = RedisStore.from_settings(StoreSettings(url=shared.url, key_prefix=shared.prefix))
    await seed_expired(store, sandbox)
    await store.close()
    server = {"token_cache_seconds": 0.0, "store_timeout": 2.0, "lock_ttl": 20.0}
    loop = asyncio.get_running_loop()
    primary = cluster_set.primary_of(f"{shared.prefix}:token:{{{APP}:{SHOP}}}")
    async with (
        proxy_processes(shopee_app(base), shared, tmp_path, count=2, server=server) as proxies,
        aiohttp.ClientSession() as session,
    ):
        load = Load(session, proxies)
        await until(lambda: _now(sandbox.stats.token_calls >= 2), 30, "rotations under load")
        killed = loop.time()
        primary.kill()
        await asyncio.to_thread(cluster_set.wait_promoted, primary.port)
        failed_over = loop.time()
        recovered = failed_over + 3.0
        await until(lambda: _now(loop.time() > recovered + 4.0), 30, "traffic after the failover")
        await load.stop()
    figures = check_window(load, killed, recovered, recovered + 4.0)
    print(f"cluster: failover {failed_over - killed:.2f}s after the kill, {figures}")
    assert sandbox.stats.reused_refresh_tokens == 0
    assert sandbox.stats.token_calls >= 3


async def test_a_master_turned_replica_answers_store_unavailable_then_serves_again(
    serve: Any, tmp_path: Path
) -> None:
    """Behind a DNS name that moves, a demoted master answers READONLY: the store drops
    that connection and dials again, so it serves as soon as the name has a master again."""
    sandbox = ShopeeSandbox(PARTNER_ID, KEY)
    base = url_of(await serve(sandbox.app()))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    named, other = redis_server_in(tmp_path / "a"), redis_server_in(tmp_path / "b")
    named.start()
    other.start()
    a, b = redis.Redis(port=named.port), redis.Redis(port=other.port)
    shared = SharedRedis(named.url)
    store = RedisStore.from_settings(StoreSettings(url=shared.url, key_prefix=shared.prefix))
    pair = sandbox.mint(SHOP)
    now = time.time()
    fresh = Token(pair["access_token"], now + 3600, now, pair["refresh_token"])
    await store.put(TOKEN, TokenRecord(token=fresh), expected_version=0)
    await store.close()
    b.replicaof("127.0.0.1", named.port)
    await until(lambda: _now(b.info("replication")["master_link_status"] == "up"), 30, "b in sync")
    server = {"token_cache_seconds": 0.0, "store_timeout": 0.5}
    loop = asyncio.get_running_loop()
    try:
        async with (
            proxy_processes(shopee_app(base), shared, tmp_path, count=1, server=server) as (proxy,),
            aiohttp.ClientSession() as session,
        ):
            assert await status(session, proxy.url + GET_SHOP) == (200, "")
            b.replicaof("NO", "ONE")  # the other server is the master now...
            a.replicaof("127.0.0.1", other.port)  # ...and the named one its replica, for 3 s
            demoted = loop.time()
            # the access token expires (written on the new master, replicated to the named
            # one): serving now needs a refresh, and a refresh needs writes (lock, record)
            on_b = RedisStore.from_settings(StoreSettings(url=other.url, key_prefix=shared.prefix))
            expired = Token(pair["access_token"], now - 1, now - 14400, pair["refresh_token"])
            version = await on_b.put(TOKEN, TokenRecord(token=expired), expected_version=ANY_VERSION)
            await on_b.close()
            name = f"{shared.prefix}:token:{{{APP}:{SHOP}}}"
            await until(lambda: _now(int(a.hget(name, "v") or 0) == version), 3, "a in sync")
            replies = []
            while loop.time() < demoted + 3.0:
                replies.append(await status(session, proxy.url + GET_SHOP))
            assert replies and set(replies) == {(503, "store_unavailable")}, replies
            a.replicaof("NO", "ONE")  # the name has a master again
            promoted = loop.time()

            async def serving() -> bool:
                return await status(session, proxy.url + GET_SHOP) == (200, "")

            took = await until(serving, 10, "2xx after the promotion")
            assert took < 1.0, took
            print(f"READONLY: {len(replies)} replies while demoted, 2xx {took:.2f}s after ({promoted:.0f})")
    finally:
        a.close()
        b.close()
        named.kill()
        other.kill()
