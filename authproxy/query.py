"""Query strings as sent (raw, percent-encoded, without `?`): drop, add, decode, redact.

Pure, and at the bottom of the package: the platforms sign with these helpers
and the proxy edge forwards with them, so both read a query the same way.
Every byte of a parameter that is not dropped is kept as the client sent it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, unquote_plus

REDACTED = "***"
#: OAuth parameters that are secret whatever the platform (platforms add their own)
OAUTH_SECRETS = frozenset({"access_token", "refresh_token", "client_secret", "code"})
#: what quote(..., safe="") leaves as it is: most values a platform adds (ids, hex signatures)
UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
UNRESERVED_PAIRS = re.compile(r"[A-Za-z0-9_.~=&-]*")


def _key(segment: str) -> str:
    return _name(segment.partition("=")[0])


def _name(raw_key: str) -> str:
    """A parameter's name, decoded (most names need no decoding)."""
    return unquote_plus(raw_key) if "%" in raw_key or "+" in raw_key else raw_key


def drop_params(query: str, names: Iterable[str]) -> str:
    """The query without the named parameters; every other byte kept."""
    owned = frozenset(names)
    if not query or not owned:
        return query
    return "&".join(s for s in query.split("&") if s and _key(s) not in owned)


def add_params(query: str, pairs: Iterable[tuple[str, str]]) -> str:
    """The query with `pairs` appended, percent-encoded."""
    pairs = list(pairs)
    encoded = "&".join([f"{k}={v}" for k, v in pairs])
    if not _unreserved_pairs(encoded, len(pairs)):
        encoded = "&".join([f"{_encoded(k)}={_encoded(v)}" for k, v in pairs])
    if not encoded:
        return query
    return f"{query}&{encoded}" if query else encoded


def _unreserved_pairs(joined: str, count: int) -> bool:
    """Whether `count` pairs joined as k=v&k=v... hold nothing quote() would change: every
    character unreserved but the separators, and no more separators than the join put in
    (one check for the usual case, where a platform adds ids, a timestamp and a hex sign)."""
    return (
        UNRESERVED_PAIRS.fullmatch(joined) is not None
        and joined.count("=") == count
        and joined.count("&") == count - 1
    )


def _encoded(text: str) -> str:
    """quote(text, safe=""), without its cost for text it would leave as it is."""
    if (text.isalnum() and text.isascii()) or UNRESERVED.fullmatch(text):  # ids, signatures: as they are
        return text
    return quote(text, safe="")


def decoded_params(query: str) -> list[tuple[str, str]]:
    """Every (key, value) of the query, decoded, in order."""
    pairs = []
    for segment in query.split("&"):
        if segment:
            key, _, value = segment.partition("=")
            pairs.append((unquote_plus(key), unquote_plus(value)))
    return pairs


def redact_query(query: str, secrets: frozenset[str] = OAUTH_SECRETS) -> str:
    """The query with the values of `secrets` (any letter case) replaced by ***."""
    if not query:
        return query
    out = []
    for segment in query.split("&"):
        key = segment.partition("=")[0]
        out.append(f"{key}={REDACTED}" if _name(key).lower() in secrets else segment)
    return "&".join(out)


def redact_all(url: str) -> str:
    """The URL with every query value hidden (for reprs of token-endpoint requests)."""
    base, mark, query = url.partition("?")
    hidden = "&".join(f"{s.partition('=')[0]}={REDACTED}" for s in query.split("&") if s)
    return base + mark + hidden
