"""`authproxy limits show APP [SHOP]`: an app's rate limits and what its buckets learned."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from authproxy.errors import ConfigError
from authproxy.limits.rules import headroom, rules_of
from authproxy.models import Quota
from authproxy.platforms import build_platform
from authproxy.settings import Settings
from authproxy.store import open_rates, open_store
from authproxy.store.rates import BucketView


async def show_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.app not in settings.apps:
        raise ConfigError(f"no app named {args.app!r} in the configuration")
    print("\n".join(describe_rules(settings, args.app)))
    store = open_store(settings.server.store)
    try:
        views = await open_rates(store).buckets(args.app, args.shop)
    finally:
        await store.close()
    print("\n".join(describe_buckets(views, args.shop)))
    return 0


def describe_rules(settings: Settings, app: str) -> list[str]:
    config = settings.apps[app]
    server = settings.server
    state = (
        f"on, max_queue_wait {server.max_queue_wait:g}s"
        if server.rate_limits
        else "OFF (rate_limits = false)"
    )
    lines = [f"app {app} ({config.platform}): shaping {state}"]
    lines.append(
        "limits (for each scope the first match wins; shaped with headroom: burst - 1, or 90 % of the rate)"
    )
    rows = [("source", "scope", "rate/s", "burst", "calls")]
    rows += [("config", str(r.quota.scope), *_numbers(r.quota), r.text) for r in rules_of(config.limits)]
    for what, quota in build_platform(config).published_limits():
        rows.append(("platform", str(quota.scope), *_numbers(quota), what))
    if len(rows) == 1:
        rows.append(("-", "shop", "-", "-", "none: only a platform's 429 holds a shop back"))
    return lines + _table(rows)


def describe_buckets(views: list[BucketView], shop: str | None) -> list[str]:
    where = f"shop {shop}" if shop else "the app and its shops"
    if not views:
        return [f"no buckets in the store for {where} (none used lately, or a memory:// store)"]
    rows = [("shop", "operation", "learned rate/s", "learned burst", "busy for", "penalty for")]
    for view in views:
        rows.append(
            (
                view.key.shop or "(app)",
                view.key.name,
                f"{view.rate:g}" if view.rate is not None else "-",
                str(view.burst) if view.burst is not None else "-",
                f"{view.empty_in:.1f}s" if view.empty_in else "-",
                f"{view.penalty_in:.1f}s" if view.penalty_in else "-",
            )
        )
    return [f"buckets in the store for {where}:", *_table(rows)]


def _numbers(quota: Quota) -> tuple[str, str]:
    _, burst = headroom(quota)
    return f"{quota.rate:g}", f"{quota.burst} ({burst})" if burst != quota.burst else str(burst)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
