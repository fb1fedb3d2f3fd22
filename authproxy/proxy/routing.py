"""Routes `/<app>/<shop>/<upstream path>?<query>` (pure).

The upstream path is validated, not rewritten: it is forwarded as the client
encoded it, so a path that decodes to a traversal is refused rather than
"fixed". The query is passed on raw (see query.py).
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote

from authproxy.errors import BadPath

MAX_DECODE_ROUNDS = 3
SHOP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


class Route(NamedTuple):
    app: str
    shop: str
    path: str  # upstream path, as the client encoded it, starting with "/"
    query: str  # raw query string without "?"


def parse_route(raw_target: str) -> Route:
    """Split a raw request target into app, shop, upstream path and query."""
    raw_path, _, query = raw_target.partition("?")
    if not raw_path.startswith("/"):
        raise BadPath("the path must start with /<app>/<shop>/")
    encoded = "%" in raw_path
    if encoded or "/." in raw_path or "\\" in raw_path or "\x00" in raw_path:  # most paths: none
        _check_path(raw_path)
    parts = raw_path.split("/", 3)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        raise BadPath("the path must start with /<app>/<shop>/")
    app, shop = (unquote(parts[1]), unquote(parts[2])) if encoded else (parts[1], parts[2])
    if not SHOP_NAME.fullmatch(shop):
        raise BadPath(f"the shop segment must match {SHOP_NAME.pattern}")
    rest = "/" + parts[3] if len(parts) == 4 else "/"
    return Route(app, shop, rest, query)


def _check_path(raw_path: str) -> None:
    """Refuse backslashes, NUL bytes and "." or ".." segments, also percent-encoded."""
    decoded = raw_path
    for _ in range(MAX_DECODE_ROUNDS):
        if "\\" in decoded or "\x00" in decoded:
            raise BadPath("backslashes and NUL bytes are not allowed in the path")
        if any(segment in (".", "..") for segment in decoded.split("/")):
            raise BadPath("'.' and '..' segments are not allowed in the path")
        once_more = unquote(decoded)
        if once_more == decoded:
            return
        decoded = once_more
    raise BadPath("the path is percent-encoded too many times")


def join_url(base_url: str, path: str, query: str) -> str:
    return base_url + path + ("?" + query if query else "")
