""".ci/compose_run.py: how CI runs deploy/compose.yaml without compose v2.

The file must translate completely (a key the runner does not know fails here, before
CI's container step), and the translation must carry what compose would do.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"


def load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_run", ROOT / ".ci" / "compose_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["compose_run"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = load_runner()
IMAGES = {"python:3.12-slim-bookworm": "local/python", "redis:7-alpine": "local/redis"}


def plan(compose: dict | None = None, env: dict[str, str] | None = None):
    text = compose if compose is not None else yaml.safe_load(COMPOSE.read_text())
    return run.plan(run.interpolate(text, env or {}), COMPOSE.parent, IMAGES, ["PYTHON_IMAGE=local/python"])


def option(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args) if arg == flag]


def test_the_example_translates_in_compose_start_order():
    found = plan()
    assert found.project == "authproxy-example"
    assert list(found.runs) == ["redis", "marketplace", "authproxy", "app"]  # waves of depends_on
    assert found.waits["app"] == {"authproxy": "service_healthy"}
    assert found.waits["authproxy"] == {"redis": "service_healthy"}
    assert found.volumes == ["authproxy-example_redis-data"]
    [build] = found.builds  # authproxy and marketplace share one image: built once
    assert build[-1] == str(ROOT) and build[build.index("-f") + 1] == str(ROOT / "Dockerfile")
    assert "PYTHON_IMAGE=local/python" in build


def test_each_service_carries_its_options():
    runs = plan().runs
    proxy = runs["authproxy"]
    assert option(proxy, "--network-alias") == ["authproxy"]
    assert "--read-only" in proxy and option(proxy, "--tmpfs") == ["/tmp"]
    assert option(proxy, "--cap-drop") == ["ALL"]
    assert option(proxy, "--volume") == [f"{ROOT}/deploy/authproxy.toml:/etc/authproxy/authproxy.toml:ro"]
    assert option(proxy, "--env") == ["GFG_CLIENT_SECRET=demo-secret"]  # ${GFG_CLIENT_SECRET:-demo-secret}
    assert proxy[-1] == "authproxy:local"  # the image's own ENTRYPOINT and CMD
    app = runs["app"]
    assert option(app, "--user") == ["10001:10001"] and app[app.index("local/python") + 1] == "python"
    redis = runs["redis"]
    assert option(redis, "--volume") == ["authproxy-example_redis-data:/data"]
    assert option(redis, "--health-cmd") == ["redis-cli ping"]
    assert redis[redis.index("local/redis") + 1 :][:3] == ["redis-server", "--appendonly", "yes"]


def test_the_marketplace_has_a_real_health_check():
    market = plan().runs["marketplace"]
    assert "--no-healthcheck" not in market
    [check] = option(market, "--health-cmd")
    assert "/_sandbox/stats" in check
    assert option(market, "--entrypoint") == ["python"]  # the rest of the entrypoint goes after the image


def test_variables_from_the_environment_win():
    proxy = plan(env={"GFG_CLIENT_SECRET": "from-env"}).runs["authproxy"]
    assert option(proxy, "--env") == ["GFG_CLIENT_SECRET=from-env"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["services"]["app"].update(network_mode="host"), "network_mode"),
        (lambda c: c.update(networks={"front": {}}), "networks"),
        (lambda c: c["services"]["redis"]["healthcheck"].update(start_interval="1s"), "start_interval"),
        (lambda c: c["services"]["redis"].update(volumes=["undeclared:/data"]), "undeclared"),
        (lambda c: c["services"]["app"]["environment"].update(X="${X:?must be set}"), "variable syntax"),
    ],
)
def test_what_it_does_not_translate_is_refused_by_name(change, named):
    compose = yaml.safe_load(COMPOSE.read_text())
    change(compose)
    with pytest.raises(run.Refused, match=named):
        plan(compose)
