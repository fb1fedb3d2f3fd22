"""`authproxy demo` and `serve` on a port that is taken: one line naming the port and what
to do, exit 1; no traceback, nothing left unclosed (run in Python's dev mode, which shows
ResourceWarnings and aiohttp's "Unclosed client session")."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.test_ops_image import DEPLOY, image_environment
from tests.procs import ROOT


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environment = image_environment(
        AUTHPROXY_CONFIG=str(DEPLOY / "authproxy.toml"),  # an app, so the proxy opens a client session
        GFG_CLIENT_SECRET="s",
        AUTHPROXY_SERVER__HOST="127.0.0.1",
        AUTHPROXY_SERVER__STORE_URL="memory://",
        **env,
    )
    command = [sys.executable, "-X", "dev", "-m", "authproxy", *args]
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120)


def assert_one_clear_line(done: subprocess.CompletedProcess[str], port: int) -> None:
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("authproxy: ")]
    assert errors == [
        f"authproxy: port {port} is already in use (127.0.0.1:{port}): stop what listens there, "
        "or choose another port with --port (or server.port, AUTHPROXY_SERVER__PORT)"
    ], done.stderr
    assert done.stderr.rstrip().endswith(errors[0]), "the last thing said"
    for noise in ("Traceback", "Unclosed", "ResourceWarning", "Task was destroyed"):
        assert noise not in done.stderr, done.stderr


@pytest.mark.parametrize(
    "args",
    [["serve"], ["serve", "--workers", "2"], ["demo"]],
    ids=["serve", "serve-workers", "demo"],
)
def test_a_taken_port_is_one_clear_line_and_exit_1(taken_port, args):
    assert_one_clear_line(run([*args, "--port", str(taken_port)]), taken_port)


def test_the_port_from_the_environment_is_named_too(taken_port):
    assert_one_clear_line(run(["serve"], AUTHPROXY_SERVER__PORT=str(taken_port)), taken_port)


def test_an_address_that_is_not_this_hosts_is_named():
    done = run(["serve", "--host", "192.0.2.1", "--port", "8080"])  # TEST-NET-1: never local
    assert done.returncode == 1, done.stderr
    assert done.stderr.rstrip().splitlines()[-1] == (
        "authproxy: cannot listen on 192.0.2.1:8080 (Cannot assign requested address): "
        "check --host (or server.host)"
    )
    assert "Traceback" not in done.stderr
