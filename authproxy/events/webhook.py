"""Signed webhook POSTs: the signature (pure) and one delivery attempt (I/O).

    X-AuthProxy-Event-Id: evt_…
    X-AuthProxy-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

`t` is the time of the attempt, so a receiver that refuses signatures older
than a few minutes (`verify(..., tolerance=300)`) cannot be fed a captured
delivery later. Redirects are not followed; any reply but 2xx is a failed
attempt (retried later by the delivery task).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

import aiohttp
from yarl import URL

from authproxy.events.model import Event

SIGNATURE_HEADER = "X-AuthProxy-Signature"
EVENT_ID_HEADER = "X-AuthProxy-Event-Id"
USER_AGENT = "authproxy-webhook/0.1"
BODY_READ = 65536


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-AuthProxy-Signature value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """A receiver's check: a v1 signature of `body` by `secret`, made within `tolerance` seconds."""
    parts = dict(part.partition("=")[::2] for part in header.split(","))
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).partition(",v1=")[2]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def body_of(event: Event) -> bytes:
    return event.to_json().encode()


@dataclass(frozen=True)
class Attempt:
    ok: bool
    outcome: str  # "HTTP 204", "HTTP 503", "ClientConnectorError", "timeout"


class WebhookSender:
    def __init__(self, session: aiohttp.ClientSession, url: str, secret: str, timeout: float) -> None:
        self.session, self.url, self._secret = session, url, secret
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"WebhookSender(host={self.host!r})"

    @property
    def host(self) -> str:
        """Where events go, for log lines: the host only (a URL may carry a token)."""
        return URL(self.url).host or "?"

    async def send(self, event: Event, now: float) -> Attempt:
        body = body_of(event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: event.id,
            SIGNATURE_HEADER: sign(self._secret, int(now), body),
        }
        try:
            async with self.session.post(
                self.url, data=body, headers=headers, timeout=self.timeout, allow_redirects=False
            ) as reply:
                await reply.content.read(BODY_READ)  # a short reply is read whole: the connection is reused
                return Attempt(200 <= reply.status < 300, f"HTTP {reply.status}")
        except TimeoutError:
            return Attempt(False, "timeout")
        except aiohttp.ClientError as exc:
            return Attempt(False, type(exc).__name__)
