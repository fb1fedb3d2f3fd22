"""A redis-server of the test's own, on a free port in a directory of the test:
stopped, killed and started again on the same port, with or without persistence."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import REQUIRE_REDIS
from tests.procs import free_port


class RedisServer:
    def __init__(self, binary: str, port: int, directory: Path, *, persistent: bool = False) -> None:
        self.binary, self.port, self.directory = binary, port, directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # persistent: every write is in the AOF before it is acknowledged, so a killed
        # server comes back with what it had (as a production Redis with AOF does)
        keep = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        )
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *keep]
        self.process = subprocess.Popen(
            [self.binary, *options, "--dir", str(self.directory)], stdout=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            for _ in range(200):
                try:
                    client.ping()
                    return
                except redis.exceptions.ConnectionError:
                    assert self.process.poll() is None, "redis-server exited"
                    time.sleep(0.05)  # polling its start-up
            raise AssertionError("redis-server did not start")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last save - what a crash or an OOM kill does."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def redis_server_in(directory: Path, *, persistent: bool = False) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_REDIS:
            pytest.fail("AUTHPROXY_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    return RedisServer(binary, free_port(), directory, persistent=persistent)
