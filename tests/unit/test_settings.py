from __future__ import annotations

from pathlib import Path

import pytest

from authproxy.errors import ConfigError
from authproxy.settings import load_settings

GOOD = """
[server]
port = 9000
[apps.gfg]
platform = "sellercenter"
base_url = "https://sellercenter-api.example"
client_id = "id"
client_secret = "${TEST_GFG_SECRET}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "authproxy.toml"
    path.write_text(text)
    return path


def test_env_secret_is_expanded_and_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_GFG_SECRET", "s3cr3t-value")
    settings = load_settings(write(tmp_path, GOOD))
    app = settings.apps["gfg"]
    assert app.client_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" not in str(settings)


def test_environment_wins_over_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_GFG_SECRET", "x")
    monkeypatch.setenv("AUTHPROXY_SERVER__PORT", "9100")
    assert load_settings(write(tmp_path, GOOD)).server.port == 9100


def test_unknown_key_is_named_with_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_GFG_SECRET", "x")
    path = write(tmp_path, GOOD + 'clinet_id = "typo"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert f"{path}: unknown key 'apps.gfg.clinet_id'" in str(caught.value)
    with pytest.raises(ConfigError, match=r"unknown key 'server.prot'"):
        load_settings(write(tmp_path, "[server]\nprot = 1\n"))


def test_missing_env_var_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_GFG_SECRET", raising=False)
    with pytest.raises(ConfigError, match=r"apps.gfg.client_secret refers to \$\{TEST_GFG_SECRET\}"):
        load_settings(write(tmp_path, GOOD))


def test_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown platform"):
        load_settings(write(tmp_path, '[apps.x]\nplatform = "ebay"\n'))
    with pytest.raises(ConfigError, match="token_timeout must be shorter"):
        load_settings(write(tmp_path, "[server]\ntoken_timeout = 40\nlock_ttl = 30\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[server\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
