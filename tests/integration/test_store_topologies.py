"""The store on every topology production uses: standalone, Sentinel, Cluster - each a
private set of real redis-server processes (tests/redis_topology.py).

No mode raises on concurrency: 2,000 store calls at once through a pool of 20 all
answer, and no server sees more than 20 connections from this process (CLIENT LIST).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from authproxy.errors import StoreUnavailable
from authproxy.models import Token, TokenKey, TokenRecord
from authproxy.settings import StoreSettings
from authproxy.store import open_rates
from authproxy.store.beside import due_index, event_log, warning_marks
from authproxy.store.rates import Ask, RateKey
from authproxy.store.redis import RedisStore
from tests.redis_server import redis_server_in
from tests.redis_topology import ClusterSet, SentinelSet

CALLS, POOL = 2000, 20


def make_token(refresh: str) -> Token:
    return Token(f"at-{refresh}", 2e9, 0.0, refresh, None)


class Topology:
    """A store URL and the servers whose CLIENT LIST counts this process's connections."""

    def __init__(self, url: str, servers: list[int]) -> None:
        self.url, self.servers = url, servers

    def connections(self) -> dict[int, int]:
        """Per server: clients that are neither replicas, Sentinels, nor this check itself."""
        counts = {}
        for port in self.servers:
            client = redis.Redis(port=port, socket_timeout=5)
            try:
                me = client.client_id()
                counts[port] = sum(
                    1
                    for entry in client.client_list()
                    if int(entry["id"]) != me
                    and not set(entry["flags"]) & {"S", "M"}
                    and not entry.get("name", "").startswith("sentinel")
                )
            finally:
                client.close()
        return counts


async def settled_connections(topology: Topology, within: float = 5.0) -> dict[int, int]:
    """The counts once a connection this process closed just now has left CLIENT LIST (a
    server sees a close a moment later; the loop runs meanwhile, so a close it still has
    to finish gets done). A pool over its bound stays over it: the counts say so."""
    deadline = time.monotonic() + within
    counts = topology.connections()
    while max(counts.values()) > POOL and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polling another process's view: nothing to wait on here
        counts = topology.connections()
    return counts


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator[Topology]:
    server = redis_server_in(tmp_path)
    server.start()
    try:
        yield Topology(server.url, [server.port])
    finally:
        server.kill()


@pytest.fixture(params=["standalone", "sentinel", "cluster"])
def topology(request: pytest.FixtureRequest) -> Topology:
    if request.param == "standalone":
        made: Topology = request.getfixturevalue("standalone")
        return made
    if request.param == "sentinel":
        sentinels: SentinelSet = request.getfixturevalue("sentinel_set")
        return Topology(sentinels.url, [sentinels.master.port])
    cluster: ClusterSet = request.getfixturevalue("cluster_set")
    return Topology(cluster.url, [node.port for node in cluster.nodes])


@pytest.fixture
async def store_on(topology: Topology) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_settings(
        StoreSettings(url=topology.url, connections=POOL, timeout=30.0, key_prefix="t")
    )
    try:
        yield store
    finally:
        await store.close()


async def test_2000_concurrent_calls_wait_for_the_pool_and_never_fail(
    topology: Topology, store_on: RedisStore
) -> None:
    keys = [TokenKey("app", f"shop-{n // 4 % 200}") for n in range(CALLS)]

    async def call(n: int, key: TokenKey) -> Any:
        if n % 4 == 0:
            record = TokenRecord(token=make_token(f"r{n}"))
            return await store_on.put(key, record, expected_version=-1)
        if n % 4 == 1:
            lock = store_on.lock(key, 5)
            if await lock.acquire():
                await lock.release()
            return True
        if n % 4 == 2:
            return await store_on.acquire_slot(key, f"lease-{n}", 1000, 5)
        return await store_on.get(key)

    outcomes = await asyncio.gather(*(call(n, key) for n, key in enumerate(keys)), return_exceptions=True)
    errors = [(n % 4, repr(o)) for n, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert errors == []
    counts = await settled_connections(topology)
    assert max(counts.values()) <= POOL, counts
    print(f"{topology.url.split(':')[0]}: connections per server {counts}")
    assert sum(counts.values()) >= 1  # the check sees this process's connections at all
    stored = await store_on.keys()
    assert len(stored) == 200


async def test_a_record_under_its_name_from_before_hash_tags_is_read_and_moved(standalone: Topology) -> None:
    """An upgrade loses no token: a record written by a version without hash tags is
    read, listed, rotated and deleted through its tagged name."""
    store = RedisStore.from_settings(StoreSettings(url=standalone.url, key_prefix="up"))
    raw = redis.Redis.from_url(standalone.url)
    try:
        old, new = TokenKey("sp", "1001"), TokenKey("sp", "1002")
        await store.put(old, TokenRecord(token=make_token("rt-1")), expected_version=0)
        await store.put(new, TokenRecord(token=make_token("rt-2")), expected_version=0)
        raw.rename("up:token:{sp:1001}", "up:token:sp:1001")  # as the old version left it
        assert await store.keys() == [old, new]  # listing adopts it
        assert raw.exists("up:token:{sp:1001}") and not raw.exists("up:token:sp:1001")
        raw.rename("up:token:{sp:1001}", "up:token:sp:1001")
        record = await store.get(old)  # reading adopts it too
        assert record is not None and record.token is not None
        assert (record.token.refresh_token, record.version) == ("rt-1", 1)
        assert await store.put(old, TokenRecord(token=make_token("rt-3")), expected_version=1) == 2
        raw.hset("up:token:sp:1001", mapping={"v": 9, "data": b"stale"})  # never over a tagged one
        record = await store.get(old)
        assert record is not None and record.version == 2
    finally:
        await store.close()
        raw.close()


async def test_every_module_beside_the_store_works_on_the_topology(store_on: RedisStore) -> None:
    """Rate buckets (EVALSHA), the due index (a two-key script), warning marks and the event
    stream all run through the same gateway, Cluster included."""
    key = TokenKey("app", "shop-1")
    rates = open_rates(store_on)
    grants = await rates.admit([Ask(RateKey("app", "shop-1", "orders"), 10.0, 5, 1.0)] * 3)
    assert all(grant.admitted for grant in grants)
    due = due_index(store_on)
    await due.schedule(key, 1.0)
    assert await due.claim("app", limit=10, lease=60, now=2.0) == [key]
    marks = warning_marks(store_on)
    assert await marks.mark(key, 3600.0, 1e9) and not await marks.mark(key, 3600.0, 1e9)
    log = event_log(store_on)
    await log.ensure_group()
    await log.append('{"n": 1}')
    entries = await log.read_new("c1", 10)
    assert [entry.payload for entry in entries] == ['{"n": 1}']
    await log.ack([entry.id for entry in entries])
    assert await log.backlog() == 0


async def test_no_call_waits_past_its_deadline(tmp_path: Path) -> None:
    """A server that stops answering (SIGSTOP): calls fail with StoreUnavailable and
    Retry-After once `timeout` has passed - waiting for the pool included - never later."""
    server = redis_server_in(tmp_path)
    server.start()
    store = RedisStore.from_settings(StoreSettings(url=server.url, connections=2, timeout=1.0))
    loop = asyncio.get_running_loop()
    try:
        await store.ping()
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        started = loop.time()
        outcomes = await asyncio.gather(
            *(store.get(TokenKey("a", str(n))) for n in range(10)), return_exceptions=True
        )
        took = loop.time() - started
        assert all(isinstance(o, StoreUnavailable) and o.retry_after == 1 for o in outcomes), outcomes
        assert took < 3.0, took  # 1 s each, in parallel, plus scheduling on a loaded box
        server.process.send_signal(signal.SIGCONT)
        assert await store.get(TokenKey("a", "1")) is None  # and it serves again, no restart
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        await store.close()
        server.kill()
