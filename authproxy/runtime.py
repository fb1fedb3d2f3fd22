"""The running proxy, built once at start-up: one AppRuntime per configured app,
beside the process-wide parts (store, HTTP session, clock, metrics).

The request handler, the OAuth callback, the command line and background
tasks all reach an app's behaviour through its AppRuntime, so the platform
and the token provider they use are always the app's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from authproxy.clients import ClientGate
from authproxy.errors import ConfigError, UnknownApp
from authproxy.events import Delivery, Events, open_events
from authproxy.keyring import Keyring
from authproxy.limits.shaper import Shaper
from authproxy.metrics import Metrics
from authproxy.models import Clock, SystemClock
from authproxy.platforms import Platform, build_platform
from authproxy.settings import AppSettings, ServerSettings, Settings
from authproxy.slots import CallSlots
from authproxy.store import TokenStore, open_rates, open_store
from authproxy.store.beside import due_index
from authproxy.store.due import DueIndex
from authproxy.store.rekey import start_up_check
from authproxy.tokens.census import Census
from authproxy.tokens.keepalive import KeepAlive
from authproxy.tokens.policy import Timing, Upkeep
from authproxy.tokens.provider import ShopTokens


@dataclass(frozen=True)
class AppRuntime:
    """One configured app: `[apps.<name>]`."""

    name: str
    settings: AppSettings
    platform: Platform
    tokens: ShopTokens

    @property
    def base_url(self) -> str:
        return self.platform.base_url


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: TokenStore
    #: seals stored secrets (the store's records; events and other stored secrets: keyring.py)
    keyring: Keyring | None
    session: aiohttp.ClientSession
    clock: Clock
    metrics: Metrics
    apps: Mapping[str, AppRuntime]
    clients: ClientGate
    slots: CallSlots
    shaper: Shaper
    upstream_timeout: aiohttp.ClientTimeout
    events: Events  # emit shop events (never raises)
    event_delivery: Delivery  # the webhook task; app.py starts and stops it (commands do not)
    keepalive: KeepAlive  # the keep-alive task; app.py starts and stops it
    census: Census  # the shops-by-status gauge's task; app.py starts and stops it

    @property
    def server(self) -> ServerSettings:
        return self.settings.server

    def app(self, name: str) -> AppRuntime:
        """The app a request names (404 unknown_app when none is configured)."""
        found = self.apps.get(name)
        if found is None:
            raise UnknownApp(f"no app named {name!r} is configured")
        return found

    def configured(self, name: str) -> AppRuntime:
        """The app a command names (ConfigError when none is configured)."""
        found = self.apps.get(name)
        if found is None:
            raise ConfigError(f"no app named {name!r} in the configuration")
        return found

    async def drain(self) -> None:
        """Let refreshes in flight and kept tokens land (shutdown)."""
        for app in self.apps.values():
            await app.tokens.drain()


RUNTIME = web.AppKey("runtime", Runtime)


def _app_runtime(
    name: str,
    app: AppSettings,
    settings: Settings,
    store: TokenStore,
    session: aiohttp.ClientSession,
    clock: Clock,
    metrics: Metrics,
    events: Events,
    due: DueIndex,
) -> AppRuntime:
    platform = build_platform(app)
    upkeep = Upkeep(platform.idle_lifetime, app.keepalive_fraction, tuple(settings.keepalive.warn_before))
    server = settings.server
    tokens = ShopTokens(
        name, platform, store, session, server, clock, metrics, upkeep=upkeep, events=events, due=due
    )
    return AppRuntime(name, app, platform, tokens)


@asynccontextmanager
async def open_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    store: TokenStore | None = None,
    check_keys: bool = True,
) -> AsyncIterator[Runtime]:
    """The runtime for `settings`; a passed-in store is not closed by it. `check_keys`:
    refuse (ConfigError) records sealed with a key id the keyring lacks (rekey.py)."""
    server = settings.server
    keyring = server.keyring()
    the_store = store or open_store(server.store, keyring)
    try:
        if check_keys:
            await start_up_check(the_store)
    except BaseException:
        if store is None:
            await the_store.close()
        raise
    the_clock = clock or SystemClock()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=server.upstream_connections, ttl_dns_cache=300),
        auto_decompress=False,
        trust_env=False,
        # every shop's calls share this session: a cookie one shop's reply sets (a platform's
        # session) must not ride along on another shop's calls. Set-Cookie still reaches the
        # client that made the call, which keeps its own cookies if it wants them.
        cookie_jar=aiohttp.DummyCookieJar(),
        # the client's Accept and Accept-Encoding, or none: replies pass through undecoded, so
        # aiohttp's own "Accept-Encoding: gzip, deflate" would send codings nobody asked for
        skip_auto_headers=("Accept", "Accept-Encoding"),
    )
    metrics = Metrics(the_clock)
    warn_before = settings.keepalive.warn_before
    events, delivery = open_events(settings.events, the_store, metrics, the_clock, warn_before)
    due = due_index(the_store)
    apps = {
        name: _app_runtime(name, app, settings, the_store, session, the_clock, metrics, events, due)
        for name, app in settings.apps.items()
    }
    shop_tokens = {name: app.tokens for name, app in apps.items()}
    configured = {name: list(app.settings.shops) for name, app in apps.items()}
    runtime = Runtime(
        settings=settings,
        store=the_store,
        keyring=keyring,
        session=session,
        clock=the_clock,
        metrics=metrics,
        apps=apps,
        clients=ClientGate(settings.clients),
        slots=CallSlots(the_store, server.slot_wait),
        shaper=Shaper(open_rates(the_store), settings, metrics),
        upstream_timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=server.connect_timeout, sock_read=server.read_timeout
        ),
        events=events,
        event_delivery=delivery,
        keepalive=KeepAlive(shop_tokens, configured, the_store, due, settings.keepalive, the_clock, metrics),
        census=Census(
            list(apps), the_store, Timing.of(server), metrics, the_clock, settings.keepalive.census_every
        ),
    )
    try:
        yield runtime
    finally:
        await runtime.drain()  # a refresh in flight may hold a rotated token: let it land
        await runtime.shaper.close()
        await runtime.slots.close()
        await events.close()  # events held while the store was away: written now, or reported lost
        await session.close()
        if store is None:
            await the_store.close()
