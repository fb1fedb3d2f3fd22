"""`authproxy tokens list/show/set/delete` (a subprocess) over records written straight into
the Redis it shares with the test: every status, text and --json, secrets always masked."""

from __future__ import annotations

import json
import re
import time

import pytest

from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus, mask
from authproxy.store import ANY_VERSION
from tests.conftest import shared_store
from tests.integration.test_authorize import cli
from tests.integration.test_cli import write_config

DAY = 86400
APPS = {
    "crm": {
        "platform": "oauth2",
        "base_url": "https://api.example",
        "token_url": "https://api.example/t",
        "client_id": "c",
        "grant_type": "refresh_token",
    },
    "amz": {"platform": "amazon", "client_id": "c", "client_secret": "amz-client-secret-never-shown"},
}


def secret(name: str) -> str:
    return f"{name}-VERY-secret-{abs(hash(name)) % 10000:04d}"


def token(name: str, now: float, *, age: float = 0, left: float = 3600, **extra: str) -> Token:
    return Token(
        access_token=secret(name + "-access"),
        expires_at=now + left,
        obtained_at=now - age,
        refresh_token=secret(name + "-refresh"),
        refresh_expires_at=now + 30 * DAY,
        extra=extra,
    )


def records(now: float) -> dict[TokenKey, TokenRecord]:
    """One shop per status `tokens list` knows, plus odd ones."""
    return {
        TokenKey("crm", "fine"): TokenRecord(token("fine", now, region="eu"), last_refresh=now),
        TokenKey("crm", "soon"): TokenRecord(token("soon", now, age=3500, left=100), last_refresh=now - 3500),
        TokenKey("crm", "old"): TokenRecord(token("old", now, age=7200, left=-3600), last_refresh=now - 7200),
        TokenKey("crm", "busy"): TokenRecord(
            token("busy", now, age=3000, left=600),
            failures=2,
            retry_at=now + 300,
            last_error="token endpoint answered HTTP 503",
        ),
        TokenKey("amz", "lost"): TokenRecord(
            token("lost", now, age=7200, left=-3600),
            status=TokenStatus.NEEDS_REAUTHORIZATION,
            last_error="token endpoint refused the grant: invalid_grant",
        ),
        TokenKey("amz", "bare"): TokenRecord(
            Token("", expires_at=now, obtained_at=now, refresh_token=secret("bare-refresh"))
        ),
        TokenKey("ghost", "x"): TokenRecord(token("ghost", now)),
    }


EXPECTED = {
    "crm/fine": "ok",
    "crm/soon": "expiring",
    "crm/old": "expired",
    "crm/busy": "cooling_down",
    "amz/lost": "needs_reauthorization",
    "amz/bare": "expired",
    "ghost/x": "ok",
}


@pytest.fixture
async def seeded(shared_redis, tmp_path):
    store = shared_store(shared_redis)
    now = time.time()
    written = records(now)
    for key, record in written.items():
        await store.put(key, record, expected_version=ANY_VERSION)
    yield write_config(tmp_path, shared_redis, **APPS), written, store
    await store.close()


def all_secrets(written: dict[TokenKey, TokenRecord]) -> list[str]:
    found = [APPS["amz"]["client_secret"]]
    for record in written.values():
        if record.token is not None:
            found += [s for s in (record.token.access_token, record.token.refresh_token) if s]
    return found


def table(text: str) -> dict[str, dict[str, str]]:
    """`tokens list` rows by app/shop, cut at the header's column starts."""
    header, *lines = text.splitlines()
    names = ["APP", "SHOP", "PLATFORM", "STATUS", "ACCESS EXPIRES", "REFRESH EXPIRES", "LAST REFRESH"]
    starts = [header.index(name) for name in names]
    assert starts == sorted(starts)
    ends = [*starts[1:], None]
    rows = [{n: line[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)} for line in lines]
    return {f"{row['APP']}/{row['SHOP']}": row for row in rows}


async def test_list_shows_every_status_masked(seeded):
    config, written, _ = seeded
    done = await cli("tokens", "list", config=config)
    assert done.returncode == 0, done.stderr
    rows = table(done.stdout)
    assert {name: row["STATUS"] for name, row in rows.items()} == EXPECTED
    assert rows["crm/fine"]["PLATFORM"] == "oauth2" and rows["amz/lost"]["PLATFORM"] == "amazon"
    assert rows["ghost/x"]["PLATFORM"] == "(not configured)"
    assert rows["crm/old"]["ACCESS EXPIRES"].endswith("ago)")
    fine = written[TokenKey("crm", "fine")].token
    assert fine is not None and fine.expires_at is not None
    stamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(fine.expires_at))
    assert re.fullmatch(re.escape(stamp) + r" \(in (59m\d\ds|1h00m)\)", rows["crm/fine"]["ACCESS EXPIRES"])
    assert re.search(r"\(in 29d23h\)$", rows["crm/fine"]["REFRESH EXPIRES"])
    assert rows["crm/busy"]["LAST REFRESH"] == "-" and rows["amz/bare"]["ACCESS EXPIRES"] == "-"
    for value in all_secrets(written):
        assert value not in done.output


async def test_list_json_is_machine_readable_and_masked(seeded):
    config, written, _ = seeded
    done = await cli("tokens", "list", "--json", config=config)
    assert done.returncode == 0, done.stderr
    items = {f"{item['app']}/{item['shop']}": item for item in json.loads(done.stdout)}
    assert {name: item["status"] for name, item in items.items()} == EXPECTED
    for key, record in written.items():
        item = items[str(key)]
        assert record.token is not None
        assert item["access_token"] == (
            mask(record.token.access_token) if record.token.access_token else None
        )
        assert item["refresh_token"] == mask(record.token.refresh_token)
        assert item["expires_at"] == pytest.approx(record.token.expires_at)
        assert item["refresh_expires_at"] == record.token.refresh_expires_at
        assert item["extra"] == dict(record.token.extra)
        assert (item["failures"], item["last_error"]) == (record.failures, record.last_error or None)
        assert item["version"] == 1
    assert items["crm/fine"]["platform"] == "oauth2" and items["ghost/x"]["platform"] is None
    assert items["crm/busy"]["retry_at"] == pytest.approx(written[TokenKey("crm", "busy")].retry_at)
    assert items["crm/fine"]["retry_at"] is None and items["amz/bare"]["access_token"] is None
    for value in all_secrets(written):
        assert value not in done.output


async def test_show_text_and_json(seeded):
    config, written, _ = seeded
    shown = await cli("tokens", "show", "crm", "busy", config=config)
    assert shown.returncode == 0, shown.stderr
    assert "status:          cooling_down" in shown.stdout
    assert "failures:        2, next try" in shown.stdout
    assert "last error:      token endpoint answered HTTP 503" in shown.stdout
    as_json = await cli("tokens", "show", "amz", "lost", "--json", config=config)
    assert as_json.returncode == 0, as_json.stderr
    item = json.loads(as_json.stdout)
    lost = written[TokenKey("amz", "lost")].token
    assert lost is not None and lost.refresh_token is not None
    assert (item["app"], item["shop"], item["platform"], item["status"]) == (
        "amz",
        "lost",
        "amazon",
        "needs_reauthorization",
    )
    assert item["refresh_token"] == "****" + lost.refresh_token[-4:]
    for value in all_secrets(written):
        assert value not in shown.output + as_json.output


async def test_set_over_a_needs_reauthorization_mark_then_delete(seeded):
    config, _, store = seeded
    new_refresh = secret("new-refresh")
    done = await cli(
        "tokens", "set", "amz", "lost", "--refresh-token", "-", config=config, stdin=new_refresh + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert new_refresh not in done.output and "****" + new_refresh[-4:] in done.stdout
    record = await store.get(TokenKey("amz", "lost"))
    assert record is not None and record.status is TokenStatus.OK and record.token is not None
    assert record.token.refresh_token == new_refresh and record.token.access_token == ""
    item = json.loads((await cli("tokens", "show", "amz", "lost", "--json", config=config)).stdout)
    assert item["status"] == "expired"  # no access token yet: the first call refreshes
    deleted = await cli("tokens", "delete", "amz", "lost", config=config)
    assert deleted.returncode == 0 and "deleted amz/lost" in deleted.stdout
    assert await store.get(TokenKey("amz", "lost")) is None
    again = await cli("tokens", "delete", "amz", "lost", config=config)
    assert again.returncode == 1 and "no token stored" in again.stdout


async def test_bad_arguments(seeded):
    config, _, _ = seeded
    unknown = await cli("tokens", "show", "nope", "x", config=config)
    assert unknown.returncode == 2 and "no app named 'nope'" in unknown.stderr
    extra = await cli(
        "tokens", "set", "crm", "x", "--access-token", "a" * 20, "--extra", "oops", config=config
    )
    assert extra.returncode == 2 and "KEY=VALUE" in extra.stderr
    nothing = await cli("tokens", "set", "crm", "x", config=config)
    assert nothing.returncode == 2 and "--access-token" in nothing.stderr
    missing = await cli("tokens", "show", "crm", "nobody", "--json", config=config)
    assert missing.returncode == 1 and "no token stored for crm/nobody" in missing.stderr
