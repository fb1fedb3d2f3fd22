"""What sealing tokens costs a proxied GET: side by side, in one run, interleaved.

    python bench/keyring_cost.py [--rounds 5] [--seconds 8] [--connections 32]

One OAuth2 sandbox process (refresh-token grant: each stored record holds an
access and a refresh token) and four `authproxy serve` processes on the
Redis at 127.0.0.1:6379/14, each with its own key prefix:

    hit/plain   hit/sealed    token_cache_seconds = 30: the token comes from the in-process cache
    miss/plain  miss/sealed   token_cache_seconds = 0: every request reads Redis and decodes the
                              record (sealed: opens two AES-256-GCM envelopes)

Each round runs wrk (1 thread) against each proxy in turn, the order rotated
per round, and reads the proxy process's CPU time (utime + stime from /proc)
before and after: CPU us per request is the steady figure on a shared machine.
First it times, in its own process, the one step sealing changes on a miss:
decoding the record read from Redis (plain vs sealed).
Prints per variant the median requests/s and CPU us/req, and the median over
rounds of (sealed - plain) CPU us/req per scenario. Needs wrk and Redis.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from proxy_get import ROOT, free_port, wait_until_up

REDIS_URL = "redis://127.0.0.1:6379/14"
SEED = "bench-seed-refresh-token"  # authproxy/sandbox/__main__.py's OAUTH2_SEED
TICKS = os.sysconf("SC_CLK_TCK")
#: like shared/bench: wrk and the upstream on CPU 0, the proxy under test on CPU 1 (taskset)
GENERATOR_CPU, PROXY_CPU = "0", "1"


def pinned(cpu: str) -> list[str]:
    return ["taskset", "-c", cpu] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


@dataclass
class Variant:
    scenario: str  # hit | miss
    sealed: bool
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.scenario}/{'sealed' if self.sealed else 'plain'}"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def wrk(url: str, seconds: int, connections: int) -> tuple[int, float, int]:
    out = subprocess.run(
        [*pinned(GENERATOR_CPU), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return total, rps, int(errors.group(1)) if errors else 0


def start_proxy(variant: Variant, sandbox: str, workdir: Path) -> None:
    port = free_port()
    cache = 30.0 if variant.scenario == "hit" else 0.0
    config = workdir / f"{variant.scenario}-{variant.sealed}.toml"
    config.write_text(
        f'[server]\nstore_url = "{REDIS_URL}"\nkey_prefix = "bench-keys-{secrets.token_hex(4)}"\n'
        f'log_level = "warning"\ntoken_cache_seconds = {cache}\n'
        f'[apps.crm]\nplatform = "oauth2"\nbase_url = "{sandbox}"\ntoken_url = "{sandbox}/oauth/token"\n'
        'grant_type = "refresh_token"\nclient_id = "bench-client"\nclient_secret = "bench-secret"\n'
        f'[apps.crm.shops.acme]\nrefresh_token = "{SEED}"\n'
    )
    keys = f"k1:{base64.b64encode(os.urandom(32)).decode()}" if variant.sealed else ""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTHPROXY_KEYS": keys}
    serve = ["-m", "authproxy", "serve", "--config", str(config), "--port", str(port)]
    command = [*pinned(PROXY_CPU), sys.executable, *serve]
    variant.process = subprocess.Popen(command, env=env)
    variant.url = f"http://127.0.0.1:{port}/crm/acme/api/orders?limit=10"
    wait_until_up(f"http://127.0.0.1:{port}/_authproxy/readyz")


def codec_cost(repeats: int = 200, number: int = 2000) -> tuple[float, float]:
    """The part of a miss that sealing changes, in this process: decoding the record
    (plain: JSON; sealed: JSON, one AES-256-GCM open, the inner JSON). CPU us per decode,
    the minimum over `repeats` interleaved runs (the least disturbed by other load)."""
    from authproxy.keyring import Keyring
    from authproxy.models import Token, TokenKey, TokenRecord
    from authproxy.store.codec import decode, encode

    keyring = Keyring({"k1": os.urandom(32)}, "k1")
    key = TokenKey("crm", "acme")
    token = Token("oa-" + secrets.token_hex(20), 2e9, 1.7e9, "rt-" + secrets.token_hex(20), None, {})
    raws = [(encode(TokenRecord(token=token), key, ring), ring) for ring in (None, keyring)]
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, (raw, ring) in enumerate(raws):
            started = time.process_time()
            for _ in range(number):
                decode(raw, 1, key, ring)
            best[i] = min(best[i], (time.process_time() - started) / number * 1e6)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    plain, sealed = codec_cost()
    print(
        f"record decode (in process): plain {plain:.2f} us, sealed {sealed:.2f} us, +{sealed - plain:.2f} us"
    )
    workdir = Path(tempfile.mkdtemp())
    sandbox_port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sandbox = subprocess.Popen(
        [
            *pinned(GENERATOR_CPU),
            sys.executable,
            "-m",
            "authproxy.sandbox",
            "oauth2",
            "--port",
            str(sandbox_port),
        ],
        env=env,
    )
    variants = [Variant(s, sealed) for s in ("hit", "miss") for sealed in (False, True)]
    try:
        wait_until_up(f"http://127.0.0.1:{sandbox_port}/_sandbox/stats")
        base = f"http://127.0.0.1:{sandbox_port}"
        for variant in variants:
            start_proxy(variant, base, workdir)
            wrk(variant.url, 1, 4)  # warm up: the first token, connections
        measure(variants, args)
    finally:
        for variant in variants:
            if variant.process is not None:
                variant.process.terminate()
                variant.process.wait(10)
        sandbox.terminate()
        sandbox.wait(10)
    report(variants, args)


def measure(variants: list[Variant], args: argparse.Namespace) -> None:
    for round_ in range(args.rounds):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for variant in order:
            assert variant.process is not None
            before = cpu_seconds(variant.process.pid)
            total, rps, errors = wrk(variant.url, args.seconds, args.connections)
            used = cpu_seconds(variant.process.pid) - before
            if errors:
                raise SystemExit(f"{variant.name}: {errors} non-2xx answers")
            variant.rps.append(rps)
            variant.cpu_us.append(used / total * 1e6)
            print(f"round {round_ + 1} {variant.name:12} {rps:9.0f} req/s {used / total * 1e6:7.1f} us/req")


def report(variants: list[Variant], args: argparse.Namespace) -> None:
    print(f"\n{args.rounds} rounds x {args.seconds}s, wrk -t1 -c{args.connections}, cpus={os.cpu_count()}")
    print(f"{'variant':12} {'req/s (median)':>15} {'CPU us/req (median)':>20} {'min-max':>14}")
    for v in variants:
        spread = f"{min(v.cpu_us):.1f}-{max(v.cpu_us):.1f}"
        print(
            f"{v.name:12} {statistics.median(v.rps):15.0f} {statistics.median(v.cpu_us):20.1f} {spread:>14}"
        )
    for scenario in ("hit", "miss"):
        plain, sealed = (v for v in variants if v.scenario == scenario)
        deltas = [s - p for p, s in zip(plain.cpu_us, sealed.cpu_us, strict=True)]
        print(
            f"{scenario}: sealed - plain = {statistics.median(deltas):+.1f} us CPU/req "
            f"(median of per-round differences; rounds {', '.join(f'{d:+.1f}' for d in deltas)})"
        )


if __name__ == "__main__":
    main()
