"""The command line as users run it: a subprocess, the same settings as `serve`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.procs import ROOT, to_toml

ACCESS = "access-token-VERY-secret-1234"
REFRESH = "refresh-token-VERY-secret-5678"


def run(*args: str, config=None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "authproxy", *args]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, input=stdin, cwd=ROOT, timeout=60)


def write_config(tmp_path, shared_redis, **apps):
    path = tmp_path / "authproxy.toml"
    document = {
        "server": {"store_url": shared_redis.url, "key_prefix": shared_redis.prefix},
        "apps": apps
        or {
            "crm": {
                "platform": "oauth2",
                "base_url": "https://api.example",
                "client_id": "c",
                "client_secret": "${CLI_TEST_SECRET}",
                "token_url": "https://api.example/t",
                "grant_type": "refresh_token",
            }
        },
    }
    path.write_text(to_toml(document))
    return path


def test_tokens_set_list_show_delete_mask_secrets(tmp_path, shared_redis, monkeypatch):
    monkeypatch.setenv("CLI_TEST_SECRET", "client-secret-never-printed")
    config = write_config(tmp_path, shared_redis)
    done = run(
        "tokens",
        "set",
        "crm",
        "acme",
        "--access-token",
        ACCESS,
        "--refresh-token",
        "-",
        "--expires-in",
        "3600",
        "--refresh-expires-in",
        "86400",
        "--extra",
        "region=eu",
        config=config,
        stdin=REFRESH + "\n",
    )
    assert done.returncode == 0, done.stderr
    listed = run("tokens", "list", config=config)
    shown = run("tokens", "show", "crm", "acme", config=config)
    for result in (done, listed, shown):
        assert ACCESS not in result.stdout + result.stderr
        assert REFRESH not in result.stdout + result.stderr
        assert "client-secret-never-printed" not in result.stdout + result.stderr
    assert "crm" in listed.stdout and "acme" in listed.stdout and " ok " in listed.stdout
    assert "oauth2" in listed.stdout
    assert "****1234" in shown.stdout and "****5678" in shown.stdout and "region: eu" in shown.stdout
    deleted = run("tokens", "delete", "crm", "acme", config=config)
    assert deleted.returncode == 0 and "deleted crm/acme" in deleted.stdout
    missing = run("tokens", "show", "crm", "acme", config=config)
    assert missing.returncode == 1 and "no token stored" in missing.stderr


def test_check_config_reports_errors_without_secrets(tmp_path, shared_redis, monkeypatch):
    monkeypatch.setenv("CLI_TEST_SECRET", "client-secret-never-printed")
    config = write_config(tmp_path, shared_redis)
    ok = run("check-config", config=config)
    assert ok.returncode == 0 and "crm: oauth2" in ok.stdout
    config.write_text(config.read_text() + 'surprise = "x"\n')
    bad = run("check-config", config=config)
    assert bad.returncode == 2
    assert "unknown key 'apps.crm.surprise'" in bad.stderr and str(config) in bad.stderr
    assert "client-secret-never-printed" not in bad.stdout + bad.stderr
    unknown = run("tokens", "show", "nope", "x", config=config.with_name("missing.toml"))
    assert unknown.returncode == 2 and "cannot read config file" in unknown.stderr


def test_tokens_with_redis_down_is_a_clear_error(tmp_path):
    from tests.procs import free_port

    config = tmp_path / "down.toml"
    config.write_text(to_toml({"server": {"store_url": f"redis://127.0.0.1:{free_port()}/0"}}))
    result = run("tokens", "list", config=config)
    assert result.returncode == 1
    assert "store_unavailable" in result.stderr and "Traceback" not in result.stderr


async def test_limits_show_prints_the_rules_and_what_the_buckets_learned(tmp_path, shared_redis):
    from authproxy.store.gcra import Lesson
    from authproxy.store.rates import Ask, RateKey
    from authproxy.store.redis_rates import RedisRates
    from tests.conftest import shared_store

    amazon = {
        "platform": "amazon",
        "client_id": "c",
        "client_secret": "s",
        "limits": [{"match": "POST /reports/*", "rate": 0.0167, "burst": 15, "scope": "app"}],
    }
    config = write_config(tmp_path, shared_redis, amz=amazon)
    store = shared_store(shared_redis)
    rates = RedisRates(store.client, store.prefix)
    key = RateKey("amz", "seller1", "getOrder")
    await rates.admit([Ask(key, 0.5, 29, 10.0)])
    await rates.learn(key, 0.5, 29, Lesson(rate=0.25, penalty_in=30.0))
    await store.close()

    shown = run("limits", "show", "amz", "seller1", config=config)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "app amz (amazon): shaping on, max_queue_wait 10s"
    assert any(line.split()[:5] == ["config", "app", "0.0167", "15", "(14)"] for line in lines)
    assert any("getOrders GET /orders/v0/orders" in line and "20 (19)" in line for line in lines)
    learned = next(line.split() for line in lines if line.split()[:2] == ["seller1", "getOrder"])
    assert learned[2:4] == ["0.25", "-"] and learned[-1].endswith("s"), "a learned rate, a penalty running"
    assert run("limits", "show", "nope", config=config).returncode == 2


def test_tokens_list_expiring_within_names_the_ending_and_why(tmp_path, shared_redis, monkeypatch):
    monkeypatch.setenv("CLI_TEST_SECRET", "client-secret-never-printed")
    config = write_config(tmp_path, shared_redis)
    for shop, until in (("ending", "3d"), ("lasting", "60d"), ("open", None)):
        extra = ["--authorized-until", until] if until else []
        done = run("tokens", "set", "crm", shop, "--refresh-token", REFRESH, *extra, config=config)
        assert done.returncode == 0, done.stderr
        assert ("authorized until" in done.stdout) is (until is not None)
    listed = run("tokens", "list", "--expiring-within", "7d", config=config)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["APP", "SHOP", "PLATFORM", "STATUS", "ACCESS", "ENDS", "BECAUSE"]
    assert len(lines) == 2 and lines[1].split()[:2] == ["crm", "ending"]
    assert lines[1].endswith("authorization ends") and "(in 2d23h)" in lines[1]
    as_json = json.loads(run("tokens", "list", "--json", config=config).stdout)
    ends = {item["shop"]: (item["access_ends"], item["authorization_ends"]) for item in as_json}
    assert ends["open"] == (None, None) and ends["ending"][0] == "authorization_ends"
    assert ends["lasting"][1] - ends["ending"][1] == pytest.approx(57 * 86400, abs=60)
    bad = run("tokens", "list", "--expiring-within", "soon", config=config)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
