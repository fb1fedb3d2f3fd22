"""authproxy side by side with the bare baselines of ../shared/bench, in one interleaved run.

    python bench/sidebyside.py [--variant NAME=SRC[,KEY=VALUE...]]... [--rounds R] [--seconds S]
                               [--baselines aio1-cache,aio2-cache] [--shapes bearer,shopee,workers2]
                               [--out FILE]

Uses the harness's own pieces (its upstream nginx, redis, baselines, wrk runs, CPU accounting
and report) and adds several authproxy candidates, so every figure comes from the same
interleaved rounds. Each variant is a source tree (default: this checkout) run as
`python -m authproxy` with PYTHONPATH=SRC, with SRC/.venv's python when it has one (an old
commit in its own worktree), else this checkout's .venv; KEY=VALUE pairs go to its environment
(e.g. AUTHPROXY_SERVER__EVENT_LOOP=asyncio). For every variant and shape it starts:

- `NAME`         Bearer GET / 1 KiB POST / GET c=1 through an oauth2 app, one process on CPU 1;
- `NAME-shopee`  a Shopee-signed GET at c=32 and c=1 (HMAC per request), one process on CPU 1;
- `NAME-w2`      `serve --workers 2` on CPUs 0,1, Bearer GET c=32 (compare with aio2-cache).

Every feature is on: JSON access log (to the harness's log file), metrics, rate limiting,
tokens encrypted at rest (where the variant knows these). Tokens are seeded with
`tokens set` before each proxy starts. The harness writes its usual report; this script
appends a table of the ratios the issue asks for (CPU us/req against aio1-cache, rps against
aio2-cache), computed per round and given as medians, and the machine's load.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import math
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
HARNESS_DIRS = (ROOT.parent / "shared" / "bench", ROOT.parent.parent / "shared" / "bench")
SHOPEE_SHOP = "1000001"
SHOPEE_PATH = f"/shopee/{SHOPEE_SHOP}/api/v2/shop/get_shop_info"
BEARER_TESTS = ("get:32", "post:32", "get:1")


def find_harness(given: str | None) -> Path:
    for folder in [Path(given)] if given else HARNESS_DIRS:
        if (folder / "bench.py").exists():
            return folder.resolve()
    raise SystemExit("no ../shared/bench/bench.py found (pass --harness DIR)")


def load_harness(folder: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("harness", folder / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["harness"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def config_text(port: int, store_url: str, upstream: str, limits: bool) -> str:
    text = f"""
[server]
host = "127.0.0.1"
port = {port}
store_url = "{store_url}"
log_format = "json"
log_level = "info"

[apps.shopify]
platform = "oauth2"
base_url = "{upstream}"
token_url = "{upstream}/oauth/token"
client_id = "bench"
client_secret = "bench-secret"

[apps.shopee]
platform = "shopee"
base_url = "{upstream}"
partner_id = 2001887
partner_key = "bench-partner-key-0123456789abcdef"
"""
    if limits:  # a limit that never binds: each call still takes its turn in the store (as with
        # Shopee's default per-path quota, which at 10/s per shop would cap the benchmark)
        text += '[[apps.shopee.limits]]\nmatch = "*"\nrate = 1000000\nburst = 1000000\n'
    return text


class Variant:
    def __init__(self, text: str) -> None:
        name, _, rest = text.partition("=")
        src, *pairs = rest.split(",") if rest else [str(ROOT)]
        self.name = name
        self.src = Path(src).resolve()
        self.env = dict(pair.split("=", 1) for pair in pairs)
        own = self.src / ".venv" / "bin" / "python"
        self.python = own if own.exists() else ROOT / ".venv" / "bin" / "python"

    def command(self, config: Path, seeds: list[str], serve_args: str) -> str:
        env = {**self.env, "PYTHONPATH": str(self.src), "AUTHPROXY_CONFIG": str(config)}
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        run = f"{shlex.quote(str(self.python))} -m authproxy"
        setup = " && ".join(f"{run} tokens set {seed} --config {config} >/dev/null" for seed in seeds)
        serve = f'{run} serve --config {config} --port "$PROXY_PORT" {serve_args}'
        return f"export {exports}; {setup} && exec {serve}"


def proxy_specs(h: ModuleType, variants: list[Variant], shapes: list[str], workdir: Path) -> list[dict]:
    specs = []
    port = h.BASE + 30
    db = 1
    token = h.TOKEN
    for variant in variants:
        for shape in shapes:
            name = variant.name + {"bearer": "", "shopee": "-shopee", "workers2": "-w2"}[shape]
            store_url = f"redis://127.0.0.1:{h.PORT['redis']}/{db}"
            config = workdir / f"{name}.toml"
            limits = (variant.src / "authproxy" / "limits").exists()  # older trees have no limits
            config.write_text(config_text(port, store_url, h.UPSTREAM_URL, limits))
            seeds = ['shopify test-shop --access-token "$TOKEN" --expires-in 86400']
            path = h.PROXY_PATH
            if shape == "shopee":
                seeds = [
                    f'shopee {SHOPEE_SHOP} --access-token "$TOKEN" --refresh-token bench-refresh '
                    "--expires-in 86400"
                ]
                path = SHOPEE_PATH
            cpus = "0,1" if shape == "workers2" else h.SUT_CPUS
            command = variant.command(config, seeds, "--workers 2" if shape == "workers2" else "")
            specs.append(
                {
                    "name": name,
                    "desc": f"authproxy {variant.name} ({shape}) from {variant.src} {variant.env or ''}",
                    "url": f"http://127.0.0.1:{port}{path}",
                    "port": port,
                    "auth": shape == "bearer",
                    "soft_auth": True,
                    "argv": [*h.taskset(cpus), "bash", "-c", command],
                    "env": {
                        "UPSTREAM_URL": h.UPSTREAM_URL,
                        "TOKEN": token,
                        "PROXY_PORT": str(port),
                        "AUTHPROXY_KEYS": "bench:" + base64.b64encode(b"k" * 32).decode(),
                    },
                    "start_timeout": h.PROXY_START_TIMEOUT,
                    "tests": BEARER_TESTS if shape == "bearer" else ("get:32", "get:1"),
                    "shape": shape,
                    "variant": variant.name,
                }
            )
            port += 1
            db += 1
    return specs


def run(h: ModuleType, specs: list[dict]) -> dict:
    results: dict = {}
    try:
        print("== starting environment and candidates", flush=True)
        envprocs = h.start_env()
        h.start_candidates(specs, envprocs)
        print("== validating", flush=True)
        h.validate(specs)
        print(f"== warm-up {h.WARMUP}s each", flush=True)
        for spec in specs:
            for test in spec["tests"]:
                if test.endswith(":32"):
                    h.run_wrk(spec["url"], test.split(":")[0], 32, h.WARMUP)
        for rnd in range(h.ROUNDS):
            order = specs[rnd % len(specs) :] + specs[: rnd % len(specs)]
            for test in BEARER_TESTS:
                for spec in order:
                    if test not in spec["tests"]:
                        continue
                    r = h.measure(spec, test)
                    r["round"] = rnd
                    results.setdefault((test, spec["name"]), []).append(r)
                    print(
                        f"  r{rnd} {test:8s} {spec['name']:18s} {r['rps']:9,.0f} rps "
                        f"p50 {r['p50']:.3f} ms  {r.get('sut_us_per_req', float('nan')):6.1f} us/req "
                        f"cpu0 {r.get('cpu0_busy', 0):.0f}% cpu1 {r.get('cpu1_busy', 0):.0f}% "
                        f"err {r['non2xx'] + r['sock_err']}",
                        flush=True,
                    )
                    for proc in h.PROCS:
                        if proc.popen.poll() is not None:
                            raise RuntimeError(
                                f"{proc.name} died (rc={proc.popen.returncode}); see {proc.log}"
                            )
    finally:
        print("== stopping processes", flush=True)
        h.stop_all()
    return results


def round_ratios(results: dict, test: str, name: str, base: str, key: str) -> list[float]:
    """name's figure / base's figure, round by round (both measured in the same round)."""
    mine = {r["round"]: r.get(key) for r in results.get((test, name), [])}
    theirs = {r["round"]: r.get(key) for r in results.get((test, base), [])}
    ratios = [mine[k] / theirs[k] for k in mine if mine[k] and theirs.get(k)]
    return [ratio for ratio in ratios if math.isfinite(ratio)]  # a figure missing in a round: NaN


def per_round(results: dict, test: str, name: str, base: str, key: str) -> float:
    """Median over rounds of (name's figure / base's figure in the same round)."""
    ratios = round_ratios(results, test, name, base, key)
    return statistics.median(ratios) if ratios else float("nan")


def spread(results: dict, test: str, name: str, base: str, key: str) -> str:
    """The median per-round ratio and, with more than one round, its range: the noise to
    read a difference against."""
    ratios = round_ratios(results, test, name, base, key)
    if len(ratios) < 2:
        return f"{per_round(results, test, name, base, key):.2f}"
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def median_of(results: dict, test: str, name: str, key: str) -> float:
    values = [r[key] for r in results.get((test, name), []) if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def ratio_table(results: dict, specs: list[dict]) -> str:
    lines = [
        "## authproxy against the bare aiohttp proxy (medians of per-round ratios, their range)\n",
        "| candidate | test | CPU us/req | x aio1-cache CPU | rps | x aio2-cache rps | p50 ms "
        "| p50 - aio1-cache |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for spec in specs:
        if "shape" not in spec:
            continue
        for test in spec["tests"]:
            name = spec["name"]
            cpu = median_of(results, test, name, "sut_us_per_req")
            p50 = median_of(results, test, name, "p50")
            base_p50 = median_of(results, test, "aio1-cache", "p50")
            lines.append(
                f"| {name} | {test} | {cpu:.0f} "
                f"| {spread(results, test, name, 'aio1-cache', 'sut_us_per_req')} "
                f"| {median_of(results, test, name, 'rps'):,.0f} "
                f"| {spread(results, test, name, 'aio2-cache', 'rps')} "
                f"| {p50:.3f} | {p50 - base_p50:+.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", action="append", default=[], help="NAME=SRC[,KEY=VALUE...]")
    parser.add_argument("--harness")
    parser.add_argument("--baselines", default="aio1-cache,aio2-cache")
    parser.add_argument("--shapes", default="bearer,shopee,workers2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--base-port", type=int, default=28080)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "sidebyside.md"))
    args = parser.parse_args()
    folder = find_harness(args.harness)
    home = Path(os.environ.get("BENCH_HOME") or tempfile.mkdtemp(prefix="authproxy-sidebyside-"))
    if not (home / ".venv").exists():
        (home / ".venv").symlink_to(folder / ".venv")  # the harness's venv (setup.sh made it)
    os.environ.update(
        BENCH_HOME=str(home),
        BASE_PORT=str(args.base_port),
        ROUNDS=str(args.rounds),
        DURATION=str(args.seconds),
        DURATION_C1=str(max(2, args.seconds // 2)),
        TESTS=",".join(BEARER_TESTS),
        CANDIDATES=args.baselines,
    )
    h = load_harness(folder)
    variants = [Variant(text) for text in args.variant] or [Variant("authproxy")]
    workdir = Path(tempfile.mkdtemp(prefix="configs-", dir=home))
    baselines = h.candidate_specs()
    for spec in baselines:
        spec["tests"] = BEARER_TESTS if spec["name"] in ("aio1-cache", "nginx", "direct") else ("get:32",)
    specs = baselines + proxy_specs(h, variants, args.shapes.split(","), workdir)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    load_before = os.getloadavg()
    started = time.time()
    results = run(h, specs)
    finished = time.time()
    load_after = os.getloadavg()
    report = h.report(specs, results, [], started, finished)
    report += "\n" + ratio_table(results, specs)
    before, after = (" ".join(f"{x:.2f}" for x in load) for load in (load_before, load_after))
    report += (
        f"\nMachine load (1/5/15 min) before: {before}, after: {after}\n"
        f"\nCommand: {' '.join(shlex.quote(a) for a in sys.argv)}\n"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"== wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
