"""Redis key names, one home: every key of one shop carries the hash tag `{app:shop}`,
every per-app key `{app}`, so each Lua script touches one Cluster slot.

    <prefix>:token:{app:shop}          the record (hash: v, data, spending)
    <prefix>:lock:{app:shop}           the refresh lock
    <prefix>:slots:{app:shop}:<part>   call slots (leases, queue, seen, ticket)
    <prefix>:warned:{app:shop}         expiry warnings sent
    <prefix>:rate:{app:shop}:<op>      a shop's rate bucket; <prefix>:rate:{app}:<op> the app's
    <prefix>:due:{app}, <prefix>:due-budget:{app}   the keep-alive due index and its budget
    <prefix>:events                    the event stream (one key: no tag needed)

Before hash tags a record lived at `<prefix>:token:app:shop` (LEGACY): the store still
reads such a record and moves it to its tagged name (store/redis.py), so an upgrade
loses no token.
"""

from __future__ import annotations

from authproxy.models import TokenKey


def shop_tag(key: TokenKey) -> str:
    return f"{{{key.app}:{key.shop}}}"


def app_tag(app: str) -> str:
    return f"{{{app}}}"


def shop_key(prefix: str, kind: str, key: TokenKey) -> str:
    return f"{prefix}:{kind}:{shop_tag(key)}"


def legacy_key(prefix: str, kind: str, key: TokenKey) -> str:
    return f"{prefix}:{kind}:{key.app}:{key.shop}"


def parse_shop_key(prefix: str, kind: str, name: str) -> tuple[TokenKey, bool]:
    """The shop a `shop_key` (or a legacy name) names, and whether the name is legacy."""
    rest = name[len(f"{prefix}:{kind}:") :]
    if rest.startswith("{") and rest.endswith("}"):
        app, _, shop = rest[1:-1].partition(":")
        return TokenKey(app, shop), False
    app, _, shop = rest.partition(":")
    return TokenKey(app, shop), True
