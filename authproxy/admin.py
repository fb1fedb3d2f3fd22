"""`authproxy tokens set | delete`, `authorize-url` and `authorize`: the operator's commands.

Everything printed is masked (all but the last 4 characters of a secret).
`tokens list | show` are in listing.py. Every token stored here goes through
the app's ShopTokens, so its events and keep-alive schedule follow.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time

from authproxy.authorize import STATE_LIFETIME, callback_url, sign_state
from authproxy.errors import RefreshError, RefreshRejected
from authproxy.events.commands import parse_since
from authproxy.listing import describe, when
from authproxy.models import Token, TokenKey, TokenRecord
from authproxy.platforms import build_platform
from authproxy.proxy.routing import SHOP_NAME
from authproxy.runtime import Runtime, open_runtime
from authproxy.settings import Settings
from authproxy.tokens.policy import Timing


def read_secret(value: str | None) -> str | None:
    """A secret given on the command line, or read from stdin when it is '-'."""
    if value == "-":
        return sys.stdin.readline().strip()
    return value


def _usage(message: str) -> int:
    print(f"authproxy: {message}", file=sys.stderr)
    return 2


# -- tokens delete / set -----------------------------------------------------------------------


async def delete_command(settings: Settings, args: argparse.Namespace) -> int:
    # no key check: a record sealed with a key no longer in the keyring can still be removed
    async with open_runtime(settings, check_keys=False) as runtime:
        tokens = runtime.configured(args.app).tokens
        key = tokens.key(args.shop)
        found = await tokens.delete(args.shop)
    print(f"deleted {key}" if found else f"no token stored for {key}")
    return 0 if found else 1


async def set_command(settings: Settings, args: argparse.Namespace) -> int:
    if any("=" not in item for item in args.extra):
        return _usage("--extra takes KEY=VALUE")
    access = read_secret(args.access_token)
    refresh = read_secret(args.refresh_token)
    if not access and not refresh:
        return _usage("give --access-token and/or --refresh-token")
    try:
        until = _authorized_until(getattr(args, "authorized_until", None))
    except ValueError as exc:
        return _usage(f"--authorized-until: {exc}")
    async with open_runtime(settings) as runtime:
        tokens = runtime.configured(args.app).tokens
        key = tokens.key(args.shop)
        now = runtime.clock.now()
        token = _given_token(args, access, refresh, now, until)
        await tokens.replace(args.shop, TokenRecord(token=token, last_refresh=now))
        record = await runtime.store.get(key)
    assert record is not None
    print("\n".join(describe(key, record, now, Timing.of(settings.server))))
    return 0


def _authorized_until(text: str | None) -> float | None:
    """`--authorized-until`: an ISO time, or a duration from now (365d)."""
    return None if text is None else parse_since(text, time.time(), ahead=True)


def _given_token(
    args: argparse.Namespace, access: str | None, refresh: str | None, now: float, until: float | None
) -> Token:
    return Token(
        access_token=access or "",
        expires_at=now + args.expires_in if args.expires_in is not None else (None if access else now),
        obtained_at=now,
        refresh_token=refresh,
        refresh_expires_at=now + args.refresh_expires_in if args.refresh_expires_in is not None else None,
        extra=dict(item.split("=", 1) for item in args.extra),
        authorized_until=until,
    )


# -- authorize-url / authorize ----------------------------------------------------------------


def authorize_url_command(settings: Settings, args: argparse.Namespace) -> int:
    """Print the consent link, its state and where the seller comes back to."""
    if args.app not in settings.apps:
        return _usage(f"no app named {args.app!r} in the configuration")
    platform = build_platform(settings.apps[args.app])
    now = time.time()
    callback = callback_url(settings.server, args.app)
    signed = args.redirect is None and callback is not None
    if args.shop is not None and not signed:
        return _usage("--shop goes into the OAuth callback's state: set server.public_url, no --redirect")
    if args.shop is not None and not SHOP_NAME.fullmatch(args.shop):
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
    if not SHOP_NAME.fullmatch(args.shop):
        return _usage(f"the shop name must match {SHOP_NAME.pattern}")
    code = read_secret(args.code)
    if not code:
        return _usage("give the authorization code: --code CODE ('-' reads it from stdin)")
    async with open_runtime(settings) as runtime:
        app = runtime.configured(args.app)
        try:
            tokens = await app.tokens.authorize(args.shop, code, args.redirect)
        except NotImplementedError as exc:
            return _usage(str(exc))
        except RefreshRejected as exc:
            return _failure(f"the platform refused the code (used, expired or another app's): {exc}")
        except RefreshError as exc:
            return _failure(f"the code exchange failed: {exc}")
        records = await _stored(runtime, [app.tokens.key(name) for name in tokens])
        now = runtime.clock.now()
    print(f"authorized {len(records)} shop(s) of {args.app}")
    for key, record in records:
        print("\n".join(describe(key, record, now, Timing.of(settings.server))))
    return 0


async def _stored(runtime: Runtime, keys: list[TokenKey]) -> list[tuple[TokenKey, TokenRecord]]:
    found = [(key, await runtime.store.get(key)) for key in keys]
    return [(key, record) for key, record in found if record is not None]


def _failure(message: str) -> int:
    print(f"authproxy: {message}", file=sys.stderr)
    return 1
