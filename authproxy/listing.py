"""`authproxy tokens list | show`: what is stored, masked, with the policy's status.

`--json` output is for scripts: times are Unix seconds (null: never/none).
Statuses are the token policy's (tokens/policy.py), as the proxy sees them;
`list --expiring-within D` keeps the shops whose access ends within D, and
says why (policy.access_ends): the authorization ends (its horizon), the
refresh token dies unused (idle expiry), or the shop needs re-authorization.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from authproxy.events.commands import parse_duration
from authproxy.models import TokenKey, TokenRecord, mask
from authproxy.runtime import AppRuntime, open_runtime
from authproxy.settings import Settings
from authproxy.tokens.policy import Timing, access_ends, status


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


def _usage(message: str) -> int:
    print(f"authproxy: {message}", file=sys.stderr)
    return 2


def as_json(
    key: TokenKey, record: TokenRecord, app: AppRuntime | None, now: float, timing: Timing
) -> dict[str, Any]:
    """One record for scripts: secrets masked, times in Unix seconds."""
    token = record.token
    refresh = token.refresh_token if token else None
    ends = None if app is None else app.tokens.aftercare.ends_at(record)
    ending = None if app is None else access_ends(record, now, app.tokens.aftercare.upkeep, ends)
    return {
        "app": key.app,
        "shop": key.shop,
        "platform": app.settings.platform if app else None,
        "status": str(status(record, now, timing)),
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
        "authorization_ends": ends,
        "access_ends_at": ending[0] if ending else None,
        "access_ends": str(ending[1]) if ending else None,
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
    timing = Timing.of(settings.server)
    within = getattr(args, "expiring_within", None)
    window = None if within is None else parse_duration(within)
    if within is not None and window is None:
        return _usage(f"--expiring-within: {within!r} is not a duration like 7d, 12h or 1h30m")
    async with open_runtime(settings) as runtime:
        now = runtime.clock.now()
        items = []
        for key in await runtime.store.keys():
            record = await runtime.store.get(key)
            if record is not None:
                items.append(as_json(key, record, runtime.apps.get(key.app), now, timing))
    if window is not None:
        items = [item for item in items if _ends_within(item, now + window)]
    if getattr(args, "json", False):
        print(json.dumps(items, indent=2))
        return 0
    _print_table(items, now, expiring=window is not None)
    return 0


def _ends_within(item: dict[str, Any], until: float) -> bool:
    return item["access_ends_at"] is not None and item["access_ends_at"] <= until


def _print_table(items: list[dict[str, Any]], now: float, *, expiring: bool) -> None:
    head: tuple[str, ...] = (
        "APP",
        "SHOP",
        "PLATFORM",
        "STATUS",
        "ACCESS EXPIRES",
        "REFRESH EXPIRES",
        "LAST REFRESH",
    )
    if expiring:
        head = ("APP", "SHOP", "PLATFORM", "STATUS", "ACCESS ENDS", "BECAUSE")
    rows: list[tuple[str, ...]] = [head]
    rows += [_ending_row(item, now) if expiring else _row(item, now) for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _ending_row(item: dict[str, Any], now: float) -> tuple[str, ...]:
    platform, ends = item["platform"] or "(not configured)", when(item["access_ends_at"], now)
    return (item["app"], item["shop"], platform, item["status"], ends, item["access_ends"].replace("_", " "))


def describe(key: TokenKey, record: TokenRecord, now: float, timing: Timing) -> list[str]:
    token = record.token
    lines = [f"{key.app}/{key.shop}", f"  status:          {status(record, now, timing)}"]
    if token is not None:
        lines += [
            f"  access token:    {mask(token.access_token)}",
            f"  expires:         {when(token.expires_at, now)}",
            f"  refresh token:   {mask(token.refresh_token)}",
            f"  refresh expires: {when(token.refresh_expires_at, now) if token.refresh_token else '-'}",
        ]
        if token.authorized_until is not None:
            lines.append(f"  authorized until: {when(token.authorized_until, now)}")
        lines += [f"  {name}: {value}" for name, value in sorted(token.extra.items())]
    lines.append(f"  last refresh:    {when(record.last_refresh, now) if record.last_refresh else '-'}")
    if record.failures:
        lines.append(f"  failures:        {record.failures}, next try {when(record.retry_at, now)}")
    if record.last_error:
        lines.append(f"  last error:      {record.last_error}")
    lines.append(f"  version:         {record.version}")
    return lines


async def show_command(settings: Settings, args: argparse.Namespace) -> int:
    async with open_runtime(settings) as runtime:
        key = runtime.configured(args.app).tokens.key(args.shop)
        record = await runtime.store.get(key)
        now = runtime.clock.now()
    if record is None:
        print(f"authproxy: no token stored for {key}", file=sys.stderr)
        return 1
    timing = Timing.of(settings.server)
    if getattr(args, "json", False):
        print(json.dumps(as_json(key, record, runtime.apps.get(key.app), now, timing), indent=2))
    else:
        print("\n".join(describe(key, record, now, timing)))
    return 0
