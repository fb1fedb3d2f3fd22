"""Which headers cross the proxy, in each direction (pure)."""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from multidict import CIMultiDict, CIMultiDictProxy

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
#: set by the proxy or the HTTP client library, or meant for the proxy: not copied from the client
REQUEST_MANAGED = frozenset({"host", "content-length", "expect", "x-request-id", "x-authproxy-max-wait"})

#: the upstream's own request id (Shoptet, Amazon...) stays readable beside authproxy's
UPSTREAM_REQUEST_ID = "X-Upstream-Request-Id"

#: headers as aiohttp keeps them: what to drop is looked up case-insensitively, in C
CaseInsensitive = CIMultiDict[str] | CIMultiDictProxy[str]

_dropped_by: dict[frozenset[str], frozenset[str]] = {}


def _request_dropped(credential_headers: frozenset[str]) -> frozenset[str]:
    """The names a request drops, per platform's credential headers (a handful: kept)."""
    found = _dropped_by.get(credential_headers)
    if found is None:
        found = HOP_BY_HOP | REQUEST_MANAGED | INBOUND_CREDENTIALS | credential_headers
        _dropped_by[credential_headers] = found
    return found


#: Connection values that name no other header (the usual ones): nothing to parse
PLAIN_CONNECTION = frozenset({"keep-alive", "close", "Keep-Alive", "Close"})
NOTHING_NAMED: frozenset[str] = frozenset()


def _tokens(value: str) -> set[str]:
    if value in PLAIN_CONNECTION:
        return set()
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def request_headers(headers: CaseInsensitive, credential_headers: frozenset[str]) -> list[tuple[str, str]]:
    """Client headers to forward upstream: no hop-by-hop, no inbound credentials."""
    dropped = _request_dropped(credential_headers)
    kept = [item for item in headers.items() if item[0].lower() not in dropped]
    if named := _named_by_connection(headers):
        kept = [item for item in kept if item[0].lower() not in named]
    return kept


def response_headers(headers: CaseInsensitive) -> list[tuple[str, str]]:
    """Upstream headers to pass back to the client: no hop-by-hop; the upstream's
    X-Request-Id as X-Upstream-Request-Id where it stands (the proxy's own goes beside it)."""
    if "X-Request-Id" in headers:
        kept = [
            (UPSTREAM_REQUEST_ID, value) if key.lower() == "x-request-id" else (key, value)
            for key, value in headers.items()
            if key.lower() not in HOP_BY_HOP
        ]
    else:  # the usual reply: filtered, nothing renamed
        kept = [item for item in headers.items() if item[0].lower() not in HOP_BY_HOP]
    if named := _named_by_connection(headers):
        kept = [item for item in kept if item[0].lower() not in named]
    return kept


def _named_by_connection(headers: CaseInsensitive) -> AbstractSet[str]:
    """What the Connection headers name: hop-by-hop too (RFC 9110 §7.6.1)."""
    values = headers.getall("Connection", ())
    if not values or (len(values) == 1 and values[0] in PLAIN_CONNECTION):  # most messages
        return NOTHING_NAMED
    return set().union(*map(_tokens, values))
