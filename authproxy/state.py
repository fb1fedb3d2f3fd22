"""The application's typed state: one object, built at start-up."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from authproxy.clients import ClientGate
from authproxy.limiter import Limiter
from authproxy.metrics import Metrics
from authproxy.models import Clock
from authproxy.platforms import Platform
from authproxy.settings import ServerSettings, Settings
from authproxy.store import TokenStore
from authproxy.tokens import TokenProvider


@dataclass
class State:
    settings: Settings
    server: ServerSettings
    platforms: dict[str, Platform]
    store: TokenStore
    session: aiohttp.ClientSession
    tokens: TokenProvider
    clients: ClientGate
    limiter: Limiter
    metrics: Metrics
    clock: Clock
    upstream_timeout: aiohttp.ClientTimeout


STATE = web.AppKey("state", State)
