"""A webhook receiver for tests: checks each signature itself, records what it accepted.

It verifies X-AuthProxy-Signature with its own HMAC code (not authproxy's), so
a wrong signature scheme fails the tests. `down` answers 503; `hang` holds
requests until released (a consumer can die mid-delivery), or until
`refuse_held` answers them 503 (nothing held is accepted, whatever became of
its sender); a receiver that is not started yet refuses connections.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

SECRET = "webhook-secret-0123456789abcdef"


class Gate:
    """What requests that came while it was current wait for, and how they end."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.refused = False

    @classmethod
    def opened(cls) -> Gate:
        gate = cls()
        gate.open.set()
        return gate


class Receiver:
    def __init__(
        self, secret: str = SECRET, tolerance: float = 300.0, now: Callable[[], float] = time.time
    ) -> None:
        self.secret, self.tolerance, self.now = secret, tolerance, now
        self.events: list[dict[str, Any]] = []
        self.bad: list[str] = []  # why a request was refused
        self.attempts = 0
        self.down = False
        self.on_accept: Callable[[], None] = lambda: None  # runs as each event is accepted
        self._gate = Gate.opened()

    def hang(self) -> None:
        """Hold the requests that come from now on."""
        if self._gate.open.is_set():
            self._gate = Gate()

    def release(self) -> None:
        """Let the held requests and all that come go on."""
        self._gate.open.set()

    def refuse_held(self) -> None:
        """Answer the held requests 503; those that come from now on go on."""
        self._gate.refused = True
        self._gate.open.set()
        self._gate = Gate.opened()

    def ids(self) -> list[str]:
        return [event["id"] for event in self.events]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        gate = self._gate
        await gate.open.wait()
        if self.down or gate.refused:
            return web.Response(status=503)
        body = await request.read()
        problem = self._check(request.headers, body)
        if problem:
            self.bad.append(problem)
            return web.Response(status=400, text=problem)
        self.events.append(json.loads(body))
        self.on_accept()
        return web.Response(status=204)

    def _check(self, headers: Any, body: bytes) -> str | None:
        fields = dict(part.split("=", 1) for part in headers.get("X-AuthProxy-Signature", "").split(","))
        stamp = fields.get("t", "")
        if not stamp.isdigit() or abs(self.now() - int(stamp)) > self.tolerance:
            return f"bad timestamp {stamp!r}"
        expected = hmac.new(self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields.get("v1", "")):
            return "bad signature"
        if json.loads(body).get("id") != headers.get("X-AuthProxy-Event-Id"):
            return "event id header differs from the body's"
        if headers.get("Content-Type") != "application/json":
            return "not JSON"
        return None
