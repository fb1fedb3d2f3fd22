"""Throughput and latency of a proxied GET, measured with wrk.

    python bench/proxy_get.py [--store memory|redis] [--workers N] [--seconds S] [--connections C]
                              [--limits off|on|both] [--rounds R]

Starts the Seller Center sandbox and `authproxy serve` as separate processes,
warms the token up, then runs wrk through the proxy. Needs `wrk` (Debian
package) on PATH.

`--limits both` starts two proxies side by side, one with rate limiting off
and one with a limit that never binds (every call pays its turn in the store,
none waits), and runs wrk against them in turn for `--rounds` rounds: the cost
of rate limiting on the proxied-GET path. CPU us/req is the proxy process's
own CPU time (user + system, from /proc) over the requests wrk completed.
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


#: a limit no benchmark reaches: every call takes its turn in the store, none waits
NEVER_BINDS = '[[apps.gfg.limits]]\nmatch = "*"\nrate = 1000000.0\nburst = 1000000\n'


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its finished children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def start_proxy(
    args: argparse.Namespace, sandbox_port: int, limits: bool
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    store_url = "memory://" if args.store == "memory" else "redis://127.0.0.1:6379/14"
    config = Path(tempfile.mkdtemp()) / "bench.toml"
    config.write_text(
        f'[server]\nstore_url = "{store_url}"\nkey_prefix = "bench-{os.getpid()}-{port}"\n'
        f'log_level = "warning"\nrate_limits = {"true" if limits else "false"}\n'
        f'[apps.gfg]\nplatform = "sellercenter"\nbase_url = "http://127.0.0.1:{sandbox_port}"\n'
        'client_id = "app-1"\nclient_secret = "secret-1"\n' + (NEVER_BINDS if limits else "")
    )
    command = [sys.executable, "-m", "authproxy", "serve", "--config", str(config), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([*command, "--workers", str(args.workers)], env=env), port


def measure(url: str, pid: int, args: argparse.Namespace) -> dict[str, str]:
    before = cpu_seconds(pid)
    figures = wrk(url, args.seconds, args.connections)
    requests = float(figures["requests/s"]) * args.seconds
    figures["cpu us/req"] = f"{(cpu_seconds(pid) - before) / requests * 1e6:.0f}" if requests else "?"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", choices=["memory", "redis"], default="memory")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--limits", choices=["off", "on", "both"], default="on")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    sandbox_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "authproxy.sandbox", "sellercenter", "--port", str(sandbox_port)], env=env
    )
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.limits]
    proxies = {limits: start_proxy(args, sandbox_port, limits) for limits in modes}
    try:
        wait_until_up(f"http://127.0.0.1:{sandbox_port}/_sandbox/stats")
        urls = {}
        for limits, (_, port) in proxies.items():
            wait_until_up(f"http://127.0.0.1:{port}/_authproxy/healthz")
            urls[limits] = f"http://127.0.0.1:{port}/gfg/shop1/v2/products?limit=10"
            for _ in range(args.workers * 4):
                urllib.request.urlopen(urls[limits], timeout=5).read()
        print(
            f"store={args.store} workers={args.workers} connections={args.connections} "
            f"seconds={args.seconds} rounds={args.rounds} cpus={os.cpu_count()}"
        )
        for round_ in range(args.rounds):
            order = modes if round_ % 2 == 0 else modes[::-1]
            for limits in order:
                figures = measure(urls[limits], proxies[limits][0].pid, args)
                print(f"round {round_ + 1} rate limits {'on ' if limits else 'off'}:", figures)
    finally:
        for proxy, _ in proxies.values():
            proxy.terminate()
        sandbox.terminate()
        for proxy, _ in proxies.values():
            proxy.wait(10)
        sandbox.wait(10)


if __name__ == "__main__":
    main()
