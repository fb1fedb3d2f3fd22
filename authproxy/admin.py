"""`authproxy tokens ...`, `authorize-url` and `authorize`: the operator's commands.

Everything printed is masked (all but the last 4 characters of a secret).
`--json` output is for scripts: times are Unix seconds (null: never/none).
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import sys
import time
from typing import Any

from authproxy.authorize import STATE_LIFETIME, callback_url, exchange_code, sign_state
from authproxy.cli import read_secret
from authproxy.errors import ConfigError, RefreshError, RefreshRejected
from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus, mask
from authproxy.platforms import build_platform
from authproxy.proxy.routing import SHOP_NAME
from authproxy.settings import AppSettings, Settings
from authproxy.store import ANY_VERSION, TokenStore, open_store

EXPIRING_WITHIN = 0.1  # of the lifetime: "expiring" in `tokens list`


def status_of(record: TokenRecord, now: float) -> str:
    """ok, expiring, expired, cooling_down or needs_reauthorization."""
    if record.status is TokenStatus.NEEDS_REAUTHORIZATION:
        return "needs_reauthorization"
    if now < record.retry_at:
        return "cooling_down"
    token = record.token
    if token is None or not token.is_valid(now):
        return "expired"
    lifetime = token.lifetime()
    if token.expires_at is not None and lifetime and token.expires_at - now < lifetime * EXPIRING_WITHIN:
        return "expiring"
    return "ok"


def when(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    seconds = at - now
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))
    span = _span(abs(seconds))
    return f"{stamp} ({'in ' + span if seconds >= 0 else span + ' ago'})"


def _span(seconds: float) -> str:
    seconds = math.floor(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _store(settings: Settings) -> TokenStore:
    return open_store(settings.server.store_url, settings.server.key_prefix)


def _app(settings: Settings, name: str) -> AppSettings:
    if name not in settings.apps:
        raise ConfigError(f"no app named {name!r} in the configuration")
    return settings.apps[name]


def _platform_name(settings: Settings, app: str) -> str | None:
    found = settings.apps.get(app)
    return found.platform if found else None


def _usage(message: str) -> int:
    print(f"authproxy: {message}", file=sys.stderr)
    return 2


# -- tokens list / show ----------------------------------------------------------------------


def as_json(key: TokenKey, record: TokenRecord, platform: str | None, now: float) -> dict[str, Any]:
    """One record for scripts: secrets masked, times in Unix seconds."""
    token = record.token
    refresh = token.refresh_token if token else None
    return {
        "app": key.app,
        "shop": key.shop,
        "platform": platform,
        "status": status_of(record, now),
        "access_token": mask(token.access_token) if token and token.access_token else None,
        "expires_at": token.expires_at if token else None,
        "refresh_token": mask(refresh) if refresh else None,
        "refresh_expires_at": token.refresh_expires_at if refresh and token else None,
        "extra": dict(token.extra) if token else {},
        "last_refresh": record.last_refresh,
        "failures": record.failures,
        "retry_at": record.retry_at or None,
        "last_error": record.last_error or None,
        "version": record.version,
    }


def _row(item: dict[str, Any], now: float) -> tuple[str, ...]:
    def at(name: str, absent: str = "-") -> str:
        return when(item[name], now) if item[name] is not None else absent

    return (
        item["app"],
        item["shop"],
        item["platform"] or "(not configured)",
        item["status"],
        at("expires_at", "never") if item["access_token"] else "-",
        at("refresh_expires_at", "never") if item["refresh_token"] else "-",
        at("last_refresh"),
    )


async def list_command(settings: Settings, args: argparse.Namespace) -> int:
    store = _store(settings)
    try:
        now = time.time()
        items = []
        for key in await store.keys():
            record = await store.get(key)
            if record is not None:
                items.append(as_json(key, record, _platform_name(settings, key.app), now))
    finally:
        await store.close()
    if getattr(args, "json", False):
        print(json.dumps(items, indent=2))
        return 0
    rows: list[tuple[str, ...]] = [
        ("APP", "SHOP", "PLATFORM", "STATUS", "ACCESS EXPIRES", "REFRESH EXPIRES", "LAST REFRESH")
    ]
    rows += [_row(item, now) for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def describe(key: TokenKey, record: TokenRecord, now: float) -> list[str]:
    token = record.token
    lines = [f"{key.app}/{key.shop}", f"  status:          {status_of(record, now)}"]
    if token is not None:
        lines += [
            f"  access token:    {mask(token.access_token)}",
            f"  expires:         {when(token.expires_at, now)}",
            f"  refresh token:   {mask(token.refresh_token)}",
            f"  refresh expires: {when(token.refresh_expires_at, now) if token.refresh_token else '-'}",
        ]
        lines += [f"  {name}: {value}" for name, value in sorted(token.extra.items())]
    lines.append(f"  last refresh:    {when(record.last_refresh, now) if record.last_refresh else '-'}")
    if record.failures:
        lines.append(f"  failures:        {record.failures}, next try {when(record.retry_at, now)}")
    if record.last_error:
        lines.append(f"  last error:      {record.last_error}")
    lines.append(f"  version:         {record.version}")
    return lines


async def show_command(settings: Settings, args: argparse.Namespace) -> int:
    _app(settings, args.app)
    key = TokenKey(args.app, args.shop)
    store = _store(settings)
    try:
        record = await store.get(key)
    finally:
        await store.close()
    if record is None:
        print(f"authproxy: no token stored for {key}", file=sys.stderr)
        return 1
    now = time.time()
    if getattr(args, "json", False):
        print(json.dumps(as_json(key, record, _platform_name(settings, key.app), now), indent=2))
    else:
        print("\n".join(describe(key, record, now)))
    return 0


# -- tokens delete / set -----------------------------------------------------------------------


async def delete_command(settings: Settings, args: argparse.Namespace) -> int:
    _app(settings, args.app)
    key = TokenKey(args.app, args.shop)
    store = _store(settings)
    try:
        found = await store.delete(key)
    finally:
        await store.close()
    print(f"deleted {key}" if found else f"no token stored for {key}")
    return 0 if found else 1


async def set_command(settings: Settings, args: argparse.Namespace) -> int:
    _app(settings, args.app)
    key = TokenKey(args.app, args.shop)
    if any("=" not in item for item in args.extra):
        return _usage("--extra takes KEY=VALUE")
    access = read_secret(args.access_token)
    refresh = read_secret(args.refresh_token)
    if not access and not refresh:
        return _usage("give --access-token and/or --refresh-token")
    now = time.time()
    extra = dict(item.split("=", 1) for item in args.extra)
    token = Token(
        access_token=access or "",
        expires_at=now + args.expires_in if args.expires_in is not None else (None if access else now),
        obtained_at=now,
        refresh_token=refresh,
        refresh_expires_at=now + args.refresh_expires_in if args.refresh_expires_in is not None else None,
        extra=extra,
    )
    store = _store(settings)
    try:
        await store.put(key, TokenRecord(token=token, last_refresh=now), expected_version=ANY_VERSION)
        record = await store.get(key)
    finally:
        await store.close()
    assert record is not None
    print("\n".join(describe(key, record, now)))
    return 0


# -- authorize-url / authorize ----------------------------------------------------------------


def authorize_url_command(settings: Settings, args: argparse.Namespace) -> int:
    """Print the consent link, its state and where the seller comes back to."""
    platform = build_platform(_app(settings, args.app))
    now = time.time()
    callback = callback_url(settings.server, args.app)
    signed = args.redirect is None and callback is not None
    if args.shop is not None and not signed:
        return _usage("--shop goes into the OAuth callback's state: set server.public_url, no --redirect")
    if args.shop is not None and not SHOP_NAME.match(args.shop):
        return _usage(f"the shop name must match {SHOP_NAME.pattern}")
    if signed and args.state is not None:
        return _usage("the OAuth callback signs its own state: leave out --state, or give --redirect")
    if signed:
        state = sign_state(settings.server.state_secret.get_secret_value(), args.app, args.shop, now)
    else:
        state = args.state or secrets.token_urlsafe(18)
    redirect = callback if signed else args.redirect
    try:
        link = platform.authorize_url(redirect, state, now)
    except NotImplementedError as exc:
        return _usage(str(exc))
    print(link)
    print(f"state:       {state}")
    if redirect:
        print(f"redirect:    {redirect}")
    if signed:
        print(f"valid until: {when(now + STATE_LIFETIME, now)}")
    return 0


async def authorize_command(settings: Settings, args: argparse.Namespace) -> int:
    """Exchange a code the seller's redirect carried; print what was stored (masked)."""
    _app(settings, args.app)
    if not SHOP_NAME.match(args.shop):
        return _usage(f"the shop name must match {SHOP_NAME.pattern}")
    code = read_secret(args.code)
    if not code:
        return _usage("give the authorization code: --code CODE ('-' reads it from stdin)")
    store = _store(settings)
    try:
        tokens = await exchange_code(settings, store, args.app, args.shop, code, args.redirect)
        records = [(TokenKey(args.app, name), await store.get(TokenKey(args.app, name))) for name in tokens]
    except NotImplementedError as exc:
        return _usage(str(exc))
    except RefreshRejected as exc:
        print(
            f"authproxy: the platform refused the code (used, expired or another app's): {exc}",
            file=sys.stderr,
        )
        return 1
    except RefreshError as exc:
        print(f"authproxy: the code exchange failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    now = time.time()
    print(f"authorized {len(records)} shop(s) of {args.app}")
    for key, record in records:
        if record is not None:
            print("\n".join(describe(key, record, now)))
    return 0
