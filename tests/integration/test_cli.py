"""The command line as users run it: a subprocess, the same settings as `serve`."""

from __future__ import annotations

import subprocess
import sys

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
