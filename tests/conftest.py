"""Shared fixtures: clocks, stores on every backend, sandboxes, proxies, log capture.

Store backends: `memory`, `fakeredis` (with Lua) and `redis` (the real server
at $AUTHPROXY_TEST_REDIS_URL, default redis://127.0.0.1:6379/15). Without a
reachable server the real-Redis cases are skipped, unless
AUTHPROXY_REQUIRE_REDIS=1 (CI), where they fail instead.

The SDK tests (tests/integration/test_sdk_*.py) drive real marketplace SDKs (the
`sdk` extra); without them they are skipped, unless AUTHPROXY_REQUIRE_SDKS=1
(CI), where they fail instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from authproxy.app import create_app
from authproxy.http_server import ProxyRunner
from authproxy.keyring import Keyring
from authproxy.models import FakeClock
from authproxy.settings import Settings, StoreSettings
from authproxy.store import TokenStore
from authproxy.store.memory import MemoryStore
from authproxy.store.redis import RedisStore

REDIS_URL = os.environ.get("AUTHPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_REDIS = os.environ.get("AUTHPROXY_REQUIRE_REDIS") == "1"
REQUIRE_SDKS = os.environ.get("AUTHPROXY_REQUIRE_SDKS") == "1"
STORE_KINDS = ["memory", "fakeredis", "redis"]
REDIS_KINDS = ["fakeredis", "redis"]


def redis_available() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
    except redis.exceptions.RedisError:
        return False
    return True


def need_real_redis() -> None:
    if not redis_available():
        if REQUIRE_REDIS:
            pytest.fail(f"AUTHPROXY_REQUIRE_REDIS=1 but no Redis answers at {REDIS_URL}")
        pytest.skip(f"no Redis at {REDIS_URL}")


def need_sdk(module: str) -> Any:
    """The SDK's module; skipped without it, failed when AUTHPROXY_REQUIRE_SDKS=1 (CI)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if REQUIRE_SDKS:
            pytest.fail(
                f"AUTHPROXY_REQUIRE_SDKS=1 but {module} does not import ({exc}): pip install -e '.[sdk]'"
            )
        pytest.skip(f"{module} is not installed (pip install -e '.[sdk]')")


class StoreFactory:
    """Makes stores of one kind that share data (as processes sharing Redis do)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefix = f"test-{secrets.token_hex(6)}"
        self.server = fakeredis.FakeServer() if kind == "fakeredis" else None
        self.memory = MemoryStore() if kind == "memory" else None
        self.made: list[RedisStore] = []

    def make(self, keyring: Keyring | None = None) -> TokenStore:
        """A store on the shared data; Redis-protocol ones seal with `keyring`."""
        if self.memory is not None:
            return self.memory
        if self.server is not None:
            client: Any = fakeredis.FakeAsyncRedis(server=self.server)
        else:
            client = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(REDIS_URL))
        store = RedisStore(client, StoreSettings(key_prefix=self.prefix), keyring)
        self.made.append(store)
        return store

    async def close(self) -> None:
        for store in self.made:
            if self.kind == "redis":
                async for key in store.client.scan_iter(match=f"{self.prefix}:*"):
                    await store.client.delete(key)
            await store.close()


@pytest.fixture(params=STORE_KINDS)
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    if request.param == "redis":
        need_real_redis()
    factory = StoreFactory(request.param)
    yield factory
    await factory.close()


@pytest.fixture(params=REDIS_KINDS)
async def redis_stores(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Only the shared (Redis-protocol) stores: for several app instances."""
    if request.param == "redis":
        need_real_redis()
    factory = StoreFactory(request.param)
    yield factory
    await factory.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Any]]:
    """Start an aiohttp app on a loopback port; returns its TestServer."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> TestServer:
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


class ProxyTestServer(TestServer):
    """A TestServer running the app as `authproxy serve` does (http_server.ProxyRunner)."""

    def __init__(self, settings: Settings, store: TokenStore, clock: Any = None) -> None:
        super().__init__(create_app(settings, clock=clock, store=store))
        self.settings = settings

    async def _make_runner(self, **kwargs: Any) -> ProxyRunner:
        return ProxyRunner(self.app, self.settings.server, **kwargs)


@pytest.fixture
async def proxy_client() -> AsyncIterator[Callable[..., Any]]:
    """Build proxies (create_app) on given settings/store/clock; returns TestClients."""
    clients: list[TestClient[Any, Any]] = []

    async def build(settings: Settings, store: TokenStore, clock: Any = None) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = TestClient(ProxyTestServer(settings, store, clock))
        await client.start_server()
        clients.append(client)
        return client

    yield build
    for client in reversed(clients):
        await client.close()


@pytest.fixture
def restore_root() -> Iterator[None]:
    """The root logger's handlers and level as they were (for tests that call setup_logging)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class LogCapture(logging.Handler):
    """Every formatted log line (message + fields) of the test, to search for secrets."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "aiohttp.access":
            # the test servers' own access log (sandboxes stand in for the platforms);
            # authproxy's serve and demo run with access_log=None
            return
        self.records.append(record)
        self.lines.append(f"{record.getMessage()} {getattr(record, 'fields', '')} {record.exc_text or ''}")

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(old_level)


def url_of(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


def oauth2_app(
    base: str, seed: str | None = None, *, client_secret: str = "csecret", **extra: Any
) -> dict[str, Any]:
    """An [apps.X] table for the OAuth2 sandbox at `base` (client "cid"); shop "acme" when seeded."""
    app: dict[str, Any] = {
        "platform": "oauth2",
        "base_url": base,
        "token_url": base + "/oauth/token",
        "grant_type": "refresh_token" if seed else "client_credentials",
        "client_id": "cid",
        "client_secret": client_secret,
        **extra,
    }
    if seed:
        app["shops"] = {"acme": {"refresh_token": seed}}
    return app


def settings_for(apps: dict[str, Any], **server: Any) -> Settings:
    return Settings(server={"store_url": "memory://", **server}, apps=apps)


@pytest.fixture(params=REDIS_KINDS)
def shared_redis(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Redis that separate processes can share: fakeredis over TCP, or the real one."""
    from tests.procs import fakeredis_tcp

    if request.param == "fakeredis":
        with fakeredis_tcp() as shared:
            yield shared
        return
    yield from _real_shared_redis()


@pytest.fixture
def real_redis() -> Iterator[Any]:
    """The real Redis only, shared with processes (for load fakeredis's thread cannot carry)."""
    yield from _real_shared_redis()


def _real_shared_redis() -> Iterator[Any]:
    from tests.procs import SharedRedis

    need_real_redis()
    shared = SharedRedis(REDIS_URL)
    yield shared
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{shared.prefix}:*"):
        client.delete(key)
    client.close()


def shared_store(shared: Any) -> RedisStore:
    """A store in the test process on the same Redis and prefix as the processes."""
    return RedisStore.from_url(shared.url, shared.prefix)
