"""The one way to Redis: every command of every store module passes through here.

`connect(settings)` builds the client `server.store_url` names (store_address.py):

    standalone  a blocking pool of `connections`: past them a command waits for a free one
    sentinel    the same pool, asking the Sentinels for the master on every (re)connect
    cluster     redis-py's Cluster client behind a semaphore of `connections` (its pool
                cannot block), initialised before the first command

and each client runs every command (and pipeline) under one deadline, `timeout`
seconds: inside it a command that meets a dropped connection, a failover
(connection refused, `READONLY` from a demoted master, `LOADING`, `CLUSTERDOWN`,
`TRYAGAIN`) reconnects - asking Sentinel again, or the cluster for its slots -
and tries again with a short backoff; past it the caller gets a Redis error that
store/redis.py's `_reachable` turns into 503 `store_unavailable` with Retry-After.
No request waits longer than the deadline, none fails merely because many run at once.

`write_and_wait` runs a compare-and-set script and `WAIT` in one non-transactional
pipeline on one connection (WAIT counts the writes of its own connection; it is refused
in Lua and answers at once in MULTI). In Cluster that connection is to the slot's primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineCommand, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeout,
)
from redis.retry import Retry

from authproxy.settings import StoreSettings
from authproxy.store_address import StoreAddress

T = TypeVar("T")
#: worth another try within the deadline: the server may be back, or another one in its place
TRANSIENT = (
    ConnectionError,
    RedisTimeout,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    MovedError,
    SlotNotCoveredError,
)
#: what the client library raises when the store cannot answer (store/redis.py's _reachable)
UNREACHABLE = (RedisError, RedisClusterException, OSError)
PAUSE_FIRST, PAUSE_MAX = 0.05, 0.5
#: Cluster: the slot map is asked for again at most this often after failures (seconds)
REFRESH_EVERY = 0.25
#: how long a master's replica count (for store_wait_replicas = auto) is trusted
REPLICAS_TTL = 10.0

Client = aioredis.Redis | RedisCluster


class DemotionAware(Connection):
    """A connection that, told `READONLY` (its server was demoted behind a name that moved),
    drops itself so the next attempt dials the name again - as redis-py does only for Sentinel."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ReadOnlyError:
            await self.disconnect()
            raise ConnectionError("the server is a replica now") from None


class DemotionAwareSSL(DemotionAware, SSLConnection):
    pass


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's master discovery with a pool that waits past its size instead of raising."""


@contextlib.asynccontextmanager
async def _deadline(seconds: float) -> AsyncIterator[None]:
    """asyncio's timeout, raised as redis-py's TimeoutError (a RedisError, as callers expect)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except RedisError:
        raise
    except TimeoutError as exc:
        raise RedisTimeout(f"no answer within {seconds:g}s") from exc


async def _within(
    deadline: float, attempt: Callable[[], Awaitable[T]], reset: Callable[[], Awaitable[None]]
) -> T:
    """`attempt` until it answers, retrying transient failures, all within `deadline` seconds."""
    pause = PAUSE_FIRST
    async with _deadline(deadline):
        while True:
            try:
                return await attempt()
            except TRANSIENT:
                await reset()
                await asyncio.sleep(pause)
                pause = min(pause * 2, PAUSE_MAX)
    raise AssertionError("unreachable")


async def _nothing() -> None:
    return None


class GatewayRedis(aioredis.Redis):
    """Standalone or Sentinel: every command under the deadline, retried within it."""

    deadline: float = 5.0
    sentinels: Sentinel | None = None  # closed with the client

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        run: Callable[..., Awaitable[Any]] = super().execute_command
        return await _within(self.deadline, lambda: run(*args, **options), _nothing)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = GatewayPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.deadline = self.deadline
        return pipe


class GatewayPipeline(Pipeline):
    """One round trip, under the deadline (retried by the connection once, not by us:
    its queue is spent by then)."""

    deadline: float = 5.0

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        async with _deadline(self.deadline):
            return await super().execute(raise_on_error)
        raise AssertionError("unreachable")


class GatedCluster(RedisCluster):
    """Cluster: at most `gate` commands at once in this process (the rest wait), each under
    the deadline; the slot map is loaded before the first command."""

    def setup_gate(self, gate: int, deadline: float) -> None:
        self.gate, self.deadline = asyncio.Semaphore(gate), deadline
        self._ready = asyncio.Lock()
        self._initialised = False
        self._refreshing = asyncio.Lock()
        self._refreshed_at = 0.0

    async def ready(self) -> None:
        if not self._initialised:
            async with self._ready:
                if not self._initialised:
                    await self.initialize()
                    self._initialised = True

    async def refresh(self) -> None:
        """Ask the cluster for its slot map again - once for all the calls that failed at
        about the same time (a failover fails many at once), at most every REFRESH_EVERY s."""
        async with self._refreshing:
            if time.monotonic() - self._refreshed_at < REFRESH_EVERY:
                return
            with contextlib.suppress(*UNREACHABLE):
                await self.nodes_manager.initialize()
            self._refreshed_at = time.monotonic()

    async def gated(self, attempt: Callable[[], Awaitable[T]]) -> T:
        async def once() -> T:
            await self.ready()
            async with self.gate:
                return await attempt()

        return await _within(self.deadline, once, self.refresh)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        run = super().execute_command
        return await self.gated(lambda: run(*args, **kwargs))

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        return GatedClusterPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py's own


class GatedClusterPipeline(ClusterPipeline):
    def __init__(self, client: GatedCluster, transaction: Any | None = None) -> None:
        super().__init__(client, transaction)
        self.gated_client = client

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = self.gated_client
        await client.ready()
        async with _deadline(client.deadline), client.gate:
            return await super().execute(raise_on_error, allow_redirections)
        raise AssertionError("unreachable")


def connect(settings: StoreSettings) -> Client:
    address = settings.address
    common: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.timeout,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
    }
    if address.mode == "cluster":
        return _cluster(address, settings, common)
    if address.mode == "sentinel":
        return _sentinel(address, settings, common)
    pool = aioredis.BlockingConnectionPool.from_url(
        address.url,
        max_connections=settings.connections,
        timeout=settings.timeout,
        health_check_interval=30,
        **common,
    )
    if not address.url.startswith("unix:"):
        pool.connection_class = DemotionAwareSSL if address.url.startswith("rediss:") else DemotionAware
    client = GatewayRedis(connection_pool=pool)
    client.deadline = settings.timeout
    return client


def _sentinel(address: StoreAddress, settings: StoreSettings, common: dict[str, Any]) -> GatewayRedis:
    auth = {"username": address.username, "password": address.password}
    sentinel_kwargs = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.connect_timeout,
        "ssl": address.tls,
        **auth,
    }
    sentinel = Sentinel(list(address.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client = sentinel.master_for(
        address.service,
        redis_class=GatewayRedis,
        connection_pool_class=BlockingSentinelPool,
        max_connections=settings.connections,
        timeout=settings.timeout,
        db=address.db,
        ssl=address.tls,
        health_check_interval=30,
        **auth,
        **common,
    )
    assert isinstance(client, GatewayRedis)
    client.deadline = settings.timeout
    client.sentinels = sentinel
    return client


def _cluster(address: StoreAddress, settings: StoreSettings, common: dict[str, Any]) -> GatedCluster:
    client = GatedCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in address.hosts],
        max_connections=settings.connections,
        username=address.username,
        password=address.password,
        ssl=address.tls,
        **common,
    )
    client.setup_gate(settings.connections, settings.timeout)
    return client


async def close(client: Any) -> None:
    await client.aclose()
    if isinstance(client, GatewayRedis) and client.sentinels is not None:
        await client.sentinels.aclose()


# -- writes that must reach replicas -------------------------------------------------------


async def write_and_wait(
    client: Any, script: str, keys: Sequence[str], args: Sequence[Any], replicas: int, wait_ms: int
) -> tuple[Any, int]:
    """EVAL `script`, then WAIT `replicas` up to `wait_ms`, on one connection: the script's
    answer and how many replicas acknowledged the write."""
    if isinstance(client, GatedCluster):
        return await client.gated(lambda: _cluster_write(client, script, keys, args, replicas, wait_ms))
    async with client.pipeline(transaction=False) as pipe:
        pipe.eval(script, len(keys), *keys, *args)
        pipe.execute_command("WAIT", replicas, wait_ms)
        answer, acked = await pipe.execute()
    return answer, int(acked)


async def _cluster_write(
    client: GatedCluster, script: str, keys: Sequence[str], args: Sequence[Any], replicas: int, wait_ms: int
) -> tuple[Any, int]:
    node = _primary_of(client, keys[0])
    commands = [
        PipelineCommand(0, "EVAL", script, len(keys), *keys, *args),
        PipelineCommand(1, "WAIT", replicas, wait_ms),
    ]
    await node.execute_pipeline(commands)
    for command in commands:
        if isinstance(command.result, Exception):
            raise command.result
    acked: Any = commands[1].result
    return commands[0].result, int(acked)


def _primary_of(client: GatedCluster, key: str) -> ClusterNode:
    node = client.get_node_from_key(key)
    if node is None:
        raise ClusterDownError(f"no primary serves the slot of {key!r}")
    return node


async def replica_count(client: Any, key: str) -> int:
    """Replicas connected to the master that holds `key` (0 when that cannot be told)."""
    try:
        if isinstance(client, GatedCluster):
            info = await client.gated(lambda: _primary_of(client, key).execute_command("INFO", "replication"))
        else:
            info = await client.info("replication")
    except UNREACHABLE:
        return 0
    if isinstance(info, bytes):
        info = info.decode()
    if isinstance(info, str):
        info = dict(line.split(":", 1) for line in info.split() if ":" in line)
    return int(info.get("connected_slaves", 0))


class ReplicaCounts:
    """store_wait_replicas = auto: per master (by key's node), 1 if it has replicas, cached."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, int]] = {}

    async def wanted(self, client: Any, key: str, configured: int | None) -> int:
        if configured is not None:
            return configured
        if isinstance(client, GatedCluster):
            await client.ready()
        where = _node_name(client, key)
        now = time.monotonic()
        cached = self._seen.get(where)
        if cached is None or now - cached[0] > REPLICAS_TTL:
            cached = (now, min(1, await replica_count(client, key)))
            self._seen[where] = cached
        return cached[1]

    def forget(self, client: Any, key: str) -> None:
        """After a write the replicas did not confirm: the master may have changed (a failover
        leaves one without replicas), so ask again next time."""
        self._seen.pop(_node_name(client, key), None)


def _node_name(client: Any, key: str) -> str:
    if isinstance(client, GatedCluster):
        with contextlib.suppress(Exception):
            return str(_primary_of(client, key).name)
    return ""


async def scan_names(client: Any, match: str, count: int) -> AsyncIterator[list[Any]]:
    """The names matching `match`, about `count` at a time (every primary of a cluster)."""
    batch: list[Any] = []
    async for name in client.scan_iter(match=match, count=count):
        batch.append(name)
        if len(batch) >= count:
            yield batch
            batch = []
    if batch:
        yield batch
