"""The documented example configuration is valid, and names every server option."""

from __future__ import annotations

import re
from pathlib import Path

from authproxy.settings import EventSettings, KeepAliveSettings, ServerSettings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "authproxy.example.toml"


def test_example_config_loads(monkeypatch):
    for name in set(re.findall(r"\$\{([A-Z0-9_]+)\}", EXAMPLE.read_text())):
        monkeypatch.setenv(name, f"value-of-{name}")
    settings = load_settings(EXAMPLE)
    assert set(settings.apps) == {"zalora", "shopee", "tiktok", "amazon", "shoptet", "crm"}
    assert settings.server == ServerSettings()  # the file states the defaults
    assert settings.events == EventSettings()
    assert settings.keepalive == KeepAliveSettings()
    shopee, amazon = settings.apps["shopee"], settings.apps["amazon"]
    assert shopee.refresh_idle_lifetime == 30 * 86400 and shopee.keepalive_fraction == 0.25
    assert amazon.platform == "amazon" and amazon.reauthorize_every == 365 * 86400


def test_example_documents_every_server_and_events_option():
    text = EXAMPLE.read_text()
    sections = (("server", ServerSettings), ("events", EventSettings), ("keepalive", KeepAliveSettings))
    for section, model in sections:
        table = text.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
        for name in model.model_fields:
            assert re.search(rf"^{name} = ", table, re.M), f"{section}.{name} is not in the example"
