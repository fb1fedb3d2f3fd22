"""Throughput and latency of a proxied GET, measured with wrk.

    python bench/proxy_get.py [--store memory|redis] [--workers N] [--seconds S] [--connections C]

Starts the Seller Center sandbox and `authproxy serve` as separate processes,
warms the token up, then runs wrk against the sandbox directly (baseline) and
through the proxy. Needs `wrk` (Debian package) on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"not up: {url}")


def wrk(url: str, seconds: int, connections: int) -> dict[str, str]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    figures = {"requests/s": re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        match = re.search(rf"\s{pct}%\s+([\d.]+\w+)", out)
        figures[f"p{pct}"] = match.group(1) if match else "?"
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non-2xx"] = errors.group(1) if errors else "0"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    sandbox_port, proxy_port = free_port(), free_port()
    store_url = "memory://" if args.store == "memory" else "redis://127.0.0.1:6379/14"
    config = Path(tempfile.mkdtemp()) / "bench.toml"
    config.write_text(
        f'[server]\nstore_url = "{store_url}"\nkey_prefix = "bench-{os.getpid()}"\nlog_level = "warning"\n'
        f'[apps.gfg]\nplatform = "sellercenter"\nbase_url = "http://127.0.0.1:{sandbox_port}"\n'
        'client_id = "app-1"\nclient_secret = "secret-1"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "authproxy.sandbox", "sellercenter", "--port", str(sandbox_port)], env=env
    )
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "authproxy",
            "serve",
            "--config",
            str(config),
            "--port",
            str(proxy_port),
            "--workers",
            str(args.workers),
        ],
        env=env,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{sandbox_port}/_sandbox/stats")
        wait_until_up(f"http://127.0.0.1:{proxy_port}/_authproxy/healthz")
        proxied = f"http://127.0.0.1:{proxy_port}/gfg/shop1/v2/products?limit=10"
        for _ in range(args.workers * 4):
            urllib.request.urlopen(proxied, timeout=5).read()
        print(
            f"store={args.store} workers={args.workers} connections={args.connections} "
            f"seconds={args.seconds} cpus={os.cpu_count()}"
        )
        print("proxied :", wrk(proxied, args.seconds, args.connections))
    finally:
        proxy.terminate()
        sandbox.terminate()
        proxy.wait(10)
        sandbox.wait(10)


if __name__ == "__main__":
    main()
