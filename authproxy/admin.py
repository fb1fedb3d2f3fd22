"""`authproxy tokens ...`: look at and manage stored tokens (secrets masked)."""

from __future__ import annotations

import argparse
import math
import sys
import time

from authproxy.cli import read_secret
from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus, mask
from authproxy.settings import Settings
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


def _key(settings: Settings, args: argparse.Namespace) -> TokenKey:
    if args.app not in settings.apps:
        from authproxy.errors import ConfigError

        raise ConfigError(f"no app named {args.app!r} in the configuration")
    return TokenKey(args.app, args.shop)


async def list_command(settings: Settings, args: argparse.Namespace) -> int:
    store = _store(settings)
    try:
        now = time.time()
        rows = [("APP", "SHOP", "PLATFORM", "STATUS", "ACCESS EXPIRES", "REFRESH EXPIRES", "LAST REFRESH")]
        for key in await store.keys():
            record = await store.get(key)
            if record is None:
                continue
            app = settings.apps.get(key.app)
            token = record.token
            rows.append(
                (
                    key.app,
                    key.shop,
                    app.platform if app else "(not configured)",
                    status_of(record, now),
                    when(token.expires_at, now) if token else "-",
                    when(token.refresh_expires_at, now) if token and token.refresh_token else "-",
                    when(record.last_refresh, now) if record.last_refresh else "-",
                )
            )
    finally:
        await store.close()
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
    key = _key(settings, args)
    store = _store(settings)
    try:
        record = await store.get(key)
    finally:
        await store.close()
    if record is None:
        print(f"authproxy: no token stored for {key}", file=sys.stderr)
        return 1
    print("\n".join(describe(key, record, time.time())))
    return 0


async def delete_command(settings: Settings, args: argparse.Namespace) -> int:
    key = _key(settings, args)
    store = _store(settings)
    try:
        found = await store.delete(key)
    finally:
        await store.close()
    print(f"deleted {key}" if found else f"no token stored for {key}")
    return 0 if found else 1


async def set_command(settings: Settings, args: argparse.Namespace) -> int:
    key = _key(settings, args)
    access = read_secret(args.access_token)
    refresh = read_secret(args.refresh_token)
    if not access and not refresh:
        print("authproxy: give --access-token and/or --refresh-token", file=sys.stderr)
        return 2
    now = time.time()
    extra = dict(item.split("=", 1) for item in args.extra if "=" in item)
    token = Token(
        access_token=access or "",
        expires_at=now + args.expires_in if args.expires_in is not None else (None if access else now),
        obtained_at=now,
        refresh_token=refresh,
        refresh_expires_at=now + args.refresh_expires_in if args.refresh_expires_in else None,
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
