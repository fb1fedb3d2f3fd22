"""`authproxy keys generate | rotate [--dry-run]`: the keyring's commands.

Roll-out of a new key, with no downtime (every replica must be able to open
what any other one seals, at every moment):

1. `keys generate --id k2`; add the line to server.keys on every replica, with
   server.active_key still the old key; restart them (k2 opens, k1 seals).
2. Make k2 active everywhere; restart them (k2 seals; k1 still opens).
3. `keys rotate` re-encrypts the records still under k1, online.
4. Remove k1 from server.keys; restart. (A start with a record under a key
   that is no longer in the keyring is refused, naming the key.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable

from authproxy.errors import ConfigError
from authproxy.keyring import new_key_line
from authproxy.settings import Settings
from authproxy.store import open_store
from authproxy.store.rekey import Census, Rotation, SealedStore, census, refuse_unknown_keys, rotate

PROGRESS_EVERY = 5.0  # seconds between progress lines of a rotation


def run(args: argparse.Namespace, load: Callable[[], Settings]) -> int:
    if args.action == "generate":
        print(new_key_line(args.id or time.strftime("k%Y%m%d%H%M%S", time.gmtime())))
        print(
            "add it to server.keys (or AUTHPROXY_KEYS) on every replica first; see `keys rotate`",
            file=sys.stderr,
        )
        return 0
    settings = load()
    return asyncio.run(_rotate(settings, dry_run=args.dry_run, rate=args.rate, batch=args.batch))


async def _rotate(settings: Settings, *, dry_run: bool, rate: float, batch: int) -> int:
    keyring = settings.server.keyring()
    if keyring is None:
        raise ConfigError(
            "keys rotate needs a keyring: server.keys (or AUTHPROXY_KEYS) and server.active_key"
        )
    store = open_store(settings.server.store, keyring)
    try:
        if not isinstance(store, SealedStore):
            raise ConfigError("the memory store keeps nothing at rest: there is nothing to rotate")
        if dry_run:
            counted = await census(store, batch)
            _print_dry_run(counted, keyring.active, keyring.ids, rate)
            return 0
        await refuse_unknown_keys(store, batch)
        ring = ", ".join(sorted(keyring.ids))
        print(f"rotating to key {keyring.active} (keyring: {ring}), {rate:g} record(s)/s")
        done = await rotate(store, rate=rate, batch=batch, progress=_progress_printer())
    finally:
        await store.close()
    return _report(done, keyring.active)


def _print_dry_run(counted: Census, active: str, ids: frozenset[str], rate: float) -> None:
    print(f"{counted.records} stored record(s) by key: {_by_key(counted)}")
    unknown = sorted(kid for kid in counted.by_key if kid and kid not in ids)
    if unknown:
        print(f"not in the keyring (cannot be opened): {', '.join(unknown)}")
    todo = sum(n for kid, n in counted.by_key.items() if kid != active)
    print(f"would re-encrypt up to {todo} record(s) to {active} (about {todo / rate:.0f} s at {rate:g}/s)")


def _by_key(counted: Census) -> str:
    return ", ".join(f"{kid or 'plain'} {n}" for kid, n in sorted(counted.by_key.items())) or "none"


def _progress_printer() -> Callable[[Rotation], None]:
    last = [time.monotonic()]

    def show(done: Rotation) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY:
            last[0] = time.monotonic()
            print(
                f"  {done.rewritten} re-encrypted, {done.already} already done, {done.busy} busy", flush=True
            )

    return show


def _report(done: Rotation, active: str) -> int:
    print(
        f"done: {done.rewritten} re-encrypted, {done.already} already under {active}, "
        f"{done.conflicts} write conflict(s) read again, {done.busy} busy lock(s) retried later"
    )
    for key, reason in sorted(done.undecryptable.items(), key=lambda item: str(item[0])):
        print(f"  {key}: does not decrypt ({reason}): authorize it again or `tokens set` it", file=sys.stderr)
    if done.left.records:
        print(
            f"{done.left.records} record(s) are still not under {active} ({_by_key(done.left)}): "
            "is a replica still sealing with an older key? Run `keys rotate` again.",
            file=sys.stderr,
        )
        return 1
    print(f"every record is under {active}: the other keys can be removed from server.keys")
    return 0
