"""The documented example configuration is valid, and names every server option."""

from __future__ import annotations

import re
from pathlib import Path

from authproxy.settings import ServerSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "authproxy.example.toml"


def test_example_config_loads(monkeypatch):
    for name in set(re.findall(r"\$\{([A-Z0-9_]+)\}", EXAMPLE.read_text())):
        monkeypatch.setenv(name, f"value-of-{name}")
    settings = load_settings(EXAMPLE)
    assert set(settings.apps) == {"zalora", "shopee", "tiktok", "amazon", "shoptet", "crm"}
    assert settings.server == ServerSettings()  # the file states the defaults


def test_example_documents_every_server_option():
    text = EXAMPLE.read_text()
    for name in ServerSettings.model_fields:
        assert re.search(rf"^{name} = ", text, re.M), f"server.{name} is not in the example"
