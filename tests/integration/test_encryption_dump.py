"""The demo flow on every platform, on real Redis: then a dump of every key.

With a keyring the dump (every type, and every base64 run in it decoded) holds
no token a sandbox issued and no client secret; without one the same search
finds them, so the search itself is shown to work.
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
import shlex
from typing import Any

import pytest
import redis.asyncio as aioredis

from authproxy.demo import demo_platforms
from authproxy.keyring import Keyring
from authproxy.sandbox.base import Sandbox
from authproxy.store.redis import RedisStore
from tests.conftest import REDIS_URL, need_real_redis, settings_for, url_of

SECRET_SETTINGS = ("client_secret", "app_secret", "partner_key", "refresh_token", "oauth_access_token")
BASE64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")


def issued(sandbox: Sandbox) -> set[str]:
    """Every token the sandbox ever handed out (access, refresh, spent, OAuth)."""
    found = set(sandbox.book.access) | set(sandbox.book.refresh) | sandbox.book.used_refresh
    for extra in ("owners", "oauth_tokens", "paired"):
        found |= set(getattr(sandbox, extra, {}))
    return found


def configured_secrets(table: dict[str, Any]) -> set[str]:
    found = {str(table[name]) for name in SECRET_SETTINGS if name in table}
    for shop in table.get("shops", {}).values():
        found |= {str(shop[name]) for name in SECRET_SETTINGS if name in shop}
    return found


async def dump(client: aioredis.Redis, prefix: str) -> bytes:
    """Every value under the prefix, whatever its type, then every base64 run decoded."""
    parts: list[bytes] = []
    async for name in client.scan_iter(match=f"{prefix}:*"):
        kind = (await client.type(name)).decode()
        if kind == "string":
            parts.append(await client.get(name))
        elif kind == "hash":
            parts += [b for pair in (await client.hgetall(name)).items() for b in pair]
        elif kind == "list":
            parts += await client.lrange(name, 0, -1)
        elif kind == "set":
            parts += list(await client.smembers(name))
        elif kind == "zset":
            parts += [member for member, _ in await client.zrange(name, 0, -1, withscores=True)]
        elif kind == "stream":
            for _, fields in await client.xrange(name):
                parts += [b for pair in fields.items() for b in pair]
        else:
            raise AssertionError(f"{name!r}: unexpected type {kind}")
        parts.append(name)
    text = b"\n".join(parts)
    decoded = []
    for run in BASE64_RUN.findall(text):
        for decoder in (base64.b64decode, base64.urlsafe_b64decode):
            with contextlib.suppress(ValueError):
                decoded.append(decoder(run + b"=" * (-len(run) % 4)))
    return text + b"\n" + b"\n".join(decoded)


async def demo_flow(serve, proxy_client, store: RedisStore) -> tuple[set[str], int]:
    """Every demo curl line, then every sandbox token revoked and every line again
    (refreshes, rotations). The secrets the sandboxes issued or were configured with."""
    platforms = demo_platforms()
    apps, bases = {}, {}
    for platform in platforms:
        bases[platform.app] = url_of(await serve(platform.sandbox.app()))
        apps[platform.app] = platform.config(bases[platform.app])
    client = await proxy_client(settings_for(apps, token_cache_seconds=0), store)
    for round_ in range(2):
        for platform in platforms:
            options = shlex.split(platform.curl_options)
            method = options[options.index("-X") + 1] if "-X" in options else "GET"
            body = options[options.index("-d") + 1].encode() if "-d" in options else None
            headers = {"Content-Type": "application/json"} if body else {}
            reply = await client.request(
                method, f"/{platform.app}{platform.curl_path}", data=body, headers=headers
            )
            assert reply.status < 300, (round_, platform.app, reply.status, await reply.text())
            if round_ == 0:
                platform.sandbox.book.expire_all()
    found: set[str] = set()
    for platform in platforms:
        found |= issued(platform.sandbox) | configured_secrets(apps[platform.app])
    return found, sum(p.sandbox.stats.token_calls for p in platforms)


@pytest.mark.parametrize("sealed", [True, False], ids=["keyring", "no-keyring"])
async def test_a_dump_of_redis_holds_no_issued_token_or_client_secret(serve, proxy_client, sealed):
    need_real_redis()
    prefix = f"test-{secrets.token_hex(6)}"
    keyring = Keyring({"k1": secrets.token_bytes(32)}, "k1") if sealed else None
    store = RedisStore.from_url(REDIS_URL, prefix, keyring)
    try:
        secrets_seen, token_calls = await demo_flow(serve, proxy_client, store)
        assert token_calls >= 2 * 6  # a token for every platform, twice
        everything = await dump(store.client, prefix)
        assert len(await store.keys()) == 6  # one record per demo shop
        leaked = sorted(s for s in secrets_seen if s.encode() in everything)
        if sealed:
            assert leaked == []
        else:  # the same search finds plain tokens: it can fail
            assert len(leaked) >= 6, leaked
    finally:
        async for name in store.client.scan_iter(match=f"{prefix}:*"):
            await store.client.delete(name)
        await store.close()
