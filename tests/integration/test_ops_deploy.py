"""deploy/: the compose example and the Kubernetes sidecar, read and checked.

No Docker or Kubernetes here: the files are parsed and their essentials are
checked against the Dockerfile and the configuration they carry (which must
pass authproxy's own validation); the sidecar's probe commands are run
against a real `authproxy serve`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from authproxy.settings import load_settings
from tests.conftest import REQUIRE_REDIS
from tests.integration.test_ops_image import DEPLOY, ROOT, image, image_environment
from tests.procs import free_port

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load_yaml(path: Path) -> list[Any]:
    try:
        import yaml
    except ImportError:
        if REQUIRE_REDIS:
            pytest.fail("PyYAML is missing: install the test extra")
        pytest.skip("PyYAML is not installed (pip install -e '.[test]')")
    return list(yaml.safe_load_all(path.read_text()))


def env_refs(toml: str) -> set[str]:
    """The ${VARIABLES} a configuration's values refer to."""

    def strings(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [text for value in node.values() for text in strings(value)]
        if isinstance(node, list):
            return [text for value in node for text in strings(value)]
        return [node] if isinstance(node, str) else []

    return {name for text in strings(tomllib.loads(toml)) for name in ENV_REF.findall(text)}


@pytest.fixture
def compose() -> dict[str, Any]:
    return dict(load_yaml(DEPLOY / "compose.yaml")[0])


@pytest.fixture
def kube() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in load_yaml(DEPLOY / "kubernetes" / "sidecar.yaml")}


def test_compose_authproxy_is_built_here_and_not_published(compose):
    proxy = compose["services"]["authproxy"]
    assert "ports" not in proxy, "reachable from the compose network only"
    build = proxy["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert proxy["read_only"] is True
    assert "/tmp" in proxy["tmpfs"]
    assert proxy["cap_drop"] == ["ALL"]
    assert "user" not in proxy or proxy["user"].split(":")[0] not in ("0", "root")
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in proxy["volumes"]}
    config = mounts[image().env["AUTHPROXY_CONFIG"]]
    assert (DEPLOY / config).resolve() == DEPLOY / "authproxy.toml"
    assert proxy["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_redis_keeps_tokens_across_restarts(compose):
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    volume, target = redis["volumes"][0].split(":")[:2]
    assert target == "/data" and volume in compose["volumes"], "a named volume, not the container's layer"
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_compose_configuration_matches_the_services(compose, monkeypatch):
    proxy = compose["services"]["authproxy"]
    for name in env_refs((DEPLOY / "authproxy.toml").read_text()):
        assert name in proxy["environment"], f"${{{name}}} is not given to the authproxy service"
        monkeypatch.setenv(name, "x")
    settings = load_settings(DEPLOY / "authproxy.toml")
    store_host = settings.server.store_url.split("//")[1].split(":")[0]
    assert store_host in compose["services"]
    app = compose["services"]["app"]
    url = app["environment"]["MARKETPLACE_URL"]
    match = re.fullmatch(r"http://authproxy:(\d+)/([^/]+)/[^/]+", url)
    assert match, url
    assert match.group(1) in image().expose
    assert match.group(2) in settings.apps
    assert app["depends_on"]["authproxy"]["condition"] == "service_healthy"
    for app_settings in settings.apps.values():
        host = (app_settings.base_url or "").split("//")[1].split(":")[0]
        assert host in compose["services"], f"{host} is not a compose service"


def authproxy_container(kube: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pod = kube["Deployment"]["spec"]["template"]["spec"]
    found = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "authproxy"]
    assert len(found) == 1
    return found[0]


def probe_command(container: dict[str, Any], probe: str) -> list[str]:
    return list(container[probe]["exec"]["command"])


def test_sidecar_listens_in_the_pod_only_and_is_probed_from_inside(kube):
    proxy = authproxy_container(kube)
    assert (
        proxy.get("restartPolicy") == "Always"
        or proxy in kube["Deployment"]["spec"]["template"]["spec"]["containers"]
    ), "an init container without restartPolicy: Always would block the pod"
    env = {item["name"]: item.get("value") for item in proxy["env"]}
    assert env["AUTHPROXY_SERVER__HOST"] == "127.0.0.1"
    # the kubelet's httpGet would come from outside the loopback: exec probes instead
    assert "/_authproxy/readyz" in " ".join(probe_command(proxy, "readinessProbe"))
    assert "/_authproxy/healthz" in " ".join(probe_command(proxy, "livenessProbe"))
    assert f":{env['AUTHPROXY_SERVER__PORT']}/" in " ".join(probe_command(proxy, "readinessProbe"))
    app = kube["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    app_env = {item["name"]: item.get("value") for item in app["env"]}
    assert app_env["MARKETPLACE_URL"].startswith(f"http://127.0.0.1:{env['AUTHPROXY_SERVER__PORT']}/")


def test_sidecar_runs_non_root_on_a_read_only_filesystem(kube):
    pod = kube["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
    mounts = {m["mountPath"]: m["name"] for m in authproxy_container(kube)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "writable /tmp for --workers' metrics files"


def test_sidecar_configuration_and_secrets_fit_together(kube, tmp_path):
    proxy = authproxy_container(kube)
    secret, config_map = kube["Secret"], kube["ConfigMap"]
    assert [s["secretRef"]["name"] for s in proxy["envFrom"]] == [secret["metadata"]["name"]]
    config_path = PurePosixPath(image().env["AUTHPROXY_CONFIG"])
    mounts = {m["name"]: m for m in proxy["volumeMounts"]}
    volumes = {v["name"]: v for v in kube["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    [config_volume] = [name for name, v in volumes.items() if "configMap" in v]
    assert volumes[config_volume]["configMap"]["name"] == config_map["metadata"]["name"]
    assert mounts[config_volume]["mountPath"] == str(config_path.parent)
    assert mounts[config_volume]["readOnly"] is True
    toml = config_map["data"][config_path.name]
    assert not re.search(r"(secret|token)\s*=\s*\"[^$]", toml), "secrets belong in the Secret"
    assert env_refs(toml) <= set(secret["stringData"]), "every ${...} comes from the Secret"
    config = tmp_path / config_path.name
    config.write_text(toml)
    check = subprocess.run(
        [sys.executable, "-m", "authproxy", "check-config", "--config", str(config)],
        env=image_environment(**secret["stringData"]),  # as envFrom gives them in the pod
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


async def test_sidecar_probe_commands_pass_against_a_running_authproxy(kube, tmp_path):
    proxy = authproxy_container(kube)
    port = free_port()
    env = image_environment(
        AUTHPROXY_SERVER__HOST="127.0.0.1",
        AUTHPROXY_SERVER__PORT=str(port),
        AUTHPROXY_SERVER__STORE_URL="memory://",
        AUTHPROXY_CONFIG=str(tmp_path / "empty.toml"),
    )
    (tmp_path / "empty.toml").write_text("")
    process = subprocess.Popen([sys.executable, "-m", "authproxy", "serve"], env=env)
    try:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = [sys.executable, *probe_command(proxy, probe)[1:]]
            command = [part.replace(":8080/", f":{port}/") for part in command]
            assert await _passes_within(command, env), probe
    finally:
        process.terminate()
        process.wait(timeout=15)


async def _passes_within(command: list[str], env: dict[str, str], seconds: float = 20.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        check = await asyncio.create_subprocess_exec(*command, env=env, stderr=asyncio.subprocess.DEVNULL)
        if await check.wait() == 0:
            return True
        await asyncio.sleep(0.1)  # polling a probe, as the kubelet does
    return False


def example_app_command(which: str, compose: dict[str, Any], kube: dict[str, dict[str, Any]]) -> list[str]:
    if which == "compose":
        return list(compose["services"]["app"]["command"])
    [app] = [c for c in kube["Deployment"]["spec"]["template"]["spec"]["containers"] if c["name"] == "app"]
    return list(app["command"])


@pytest.mark.parametrize("which", ["compose", "sidecar"])
def test_example_app_ends_at_once_on_sigterm(which, compose, kube):
    """As PID 1 of its container, a process without a SIGTERM handler is not stopped by
    SIGTERM: `docker stop` waited its 10 s grace and killed it (exit 137). Here (not PID 1)
    the default action would end it by the signal; the handler ends it with exit 0."""
    command = example_app_command(which, compose, kube)
    assert command[:2] == ["python", "-c"]
    env = {"PATH": os.environ["PATH"], "MARKETPLACE_URL": f"http://127.0.0.1:{free_port()}/gfg/shop1"}
    app = subprocess.Popen([sys.executable, *command[1:]], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert app.stdout is not None
        assert app.stdout.readline().startswith("unreachable:")  # its first call is done: it is in its loop
        app.send_signal(signal.SIGTERM)
        assert app.wait(timeout=10) == 0
    finally:
        app.kill()
        app.wait()
