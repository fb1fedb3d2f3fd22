"""Real `authproxy serve` processes sharing one Redis, for cross-process tests.

The Redis is either the real server (AUTHPROXY_TEST_REDIS_URL) or fakeredis's
TCP server running in a thread of the test process; each use gets its own key
prefix. Processes are started with `python -m authproxy serve` and are ready
when their /_authproxy/readyz answers 200.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import fakeredis

ROOT = Path(__file__).resolve().parent.parent
READY_WITHIN = 20.0


@dataclass
class SharedRedis:
    url: str
    prefix: str = field(default_factory=lambda: f"test-{secrets.token_hex(6)}")


class _FakeRedisServer(fakeredis.TcpFakeServer):  # type: ignore[misc]
    request_queue_size = 1024  # socketserver's default backlog of 5 drops bursts of connects
    daemon_threads = True


@contextmanager
def fakeredis_tcp() -> Iterator[SharedRedis]:
    server = _FakeRedisServer(("127.0.0.1", 0), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SharedRedis(f"redis://127.0.0.1:{server.server_address[1]}/0")
    finally:
        server.shutdown()
        server.server_close()


def memory_of(pid: int, field: str = "VmRSS") -> int:
    """Bytes of a process's memory, as /proc/<pid>/status has it (VmRSS now, VmHWM at peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


@asynccontextmanager
async def sandbox_process(name: str = "sellercenter") -> AsyncIterator[str]:
    """A sandbox in a process of its own (out of the measured ones); yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "authproxy.sandbox", name, "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(400):  # readiness poll, bounded
                try:
                    async with session.get(url + "/_sandbox/stats"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def to_toml(document: dict[str, Any]) -> str:
    """A small TOML writer: tables of strings, numbers, booleans, lists and lists of tables."""
    lines: list[str] = []

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int | float):
            return repr(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(x) for x in item) + "]"
        if isinstance(item, dict):  # inside a list: an inline table ([[apps.X.limits]] as a list)
            return "{" + ", ".join(f'"{k}" = {value(v)}' for k, v in item.items()) + "}"
        return '"' + str(item).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def table(name: str, data: dict[str, Any]) -> None:
        scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
        if name:
            lines.append(f"[{name}]")
        lines.extend(f'"{k}" = {value(v)}' for k, v in scalars.items())
        for key, sub in data.items():
            if isinstance(sub, dict):
                table(f'{name}."{key}"' if name else f'"{key}"', sub)

    table("", document)
    return "\n".join(lines) + "\n"


@dataclass
class ProxyProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def _wait_ready(proc: ProxyProcess) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_WITHIN
    async with aiohttp.ClientSession() as session:
        while loop.time() < deadline:
            if proc.process.poll() is not None:
                raise RuntimeError(f"authproxy exited early:\n{proc.log()}")
            try:
                async with session.get(proc.url + "/_authproxy/readyz") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)  # polling a readiness probe, not standing in for a result
    raise RuntimeError(f"authproxy not ready within {READY_WITHIN}s:\n{proc.log()}")


@asynccontextmanager
async def proxy_processes(
    apps: dict[str, Any],
    redis: SharedRedis,
    tmp_path: Path,
    count: int = 2,
    server: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    sections: dict[str, Any] | None = None,
) -> AsyncIterator[list[ProxyProcess]]:
    """`count` separate `authproxy serve` processes on one Redis (`sections`: more tables, e.g. events)."""
    config = {
        **(sections or {}),
        "server": {
            "store_url": redis.url,
            "key_prefix": redis.prefix,
            "log_format": "json",
            **(server or {}),
        },
        "apps": apps,
    }
    path = tmp_path / f"authproxy-{secrets.token_hex(4)}.toml"
    path.write_text(to_toml(config))
    procs = [_start(path, tmp_path, i, env) for i in range(count)]
    try:
        await asyncio.gather(*(_wait_ready(proc) for proc in procs))
        yield procs
    finally:
        for proc in procs:
            proc.process.terminate()
        # waited for without blocking the loop: sandboxes served by this process must keep
        # answering while the replicas shut down (a refresh they finish then is real)
        await asyncio.gather(*(asyncio.to_thread(_reap, proc) for proc in procs))


def _reap(proc: ProxyProcess) -> None:
    try:
        proc.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.process.kill()
        proc.process.wait()


def _start(config: Path, tmp_path: Path, index: int, env: dict[str, str] | None) -> ProxyProcess:
    port = free_port()
    log_path = tmp_path / f"authproxy-{port}.log"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "authproxy", "serve", "--config", str(config), "--port", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=ROOT,
        )
    return ProxyProcess(f"http://127.0.0.1:{port}", process, log_path)
