"""Which headers cross the proxy, in each direction (pure)."""

from __future__ import annotations

from collections.abc import Iterable

#: RFC 9110 §7.6.1 hop-by-hop headers, plus the de-facto ones
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CLIENT_KEY_HEADER = "x-authproxy-key"
#: inbound credentials: never forwarded, whatever the platform
INBOUND_CREDENTIALS = frozenset({"authorization", "cookie", CLIENT_KEY_HEADER})
#: set by the proxy or the HTTP client library, not copied from the client
REQUEST_MANAGED = frozenset({"host", "content-length", "expect", "x-request-id"})

Headers = Iterable[tuple[str, str]]


def _connection_named(headers: Headers) -> frozenset[str]:
    named: set[str] = set()
    for key, value in headers:
        if key.lower() == "connection":
            named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return frozenset(named)


def request_headers(headers: Headers, credential_headers: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """Client headers to forward upstream: no hop-by-hop, no inbound credentials."""
    items = list(headers)
    dropped = HOP_BY_HOP | REQUEST_MANAGED | INBOUND_CREDENTIALS | credential_headers
    dropped |= _connection_named(items)
    return tuple((k, v) for k, v in items if k.lower() not in dropped)


def response_headers(headers: Headers) -> list[tuple[str, str]]:
    """Upstream headers to pass back to the client: no hop-by-hop."""
    items = list(headers)
    dropped = HOP_BY_HOP | _connection_named(items)
    return [(k, v) for k, v in items if k.lower() not in dropped]
